"""Ruby gems: Gemfile.lock GEM specs and installed `specifications/*.gemspec`."""

from __future__ import annotations

import re

from garrison.scan.inventory.interface import Detector, basename

_SPEC = re.compile(r"^    ([A-Za-z0-9_.\-]+) \(([^)]+)\)\s*$")
_GEMSPEC_FILE = re.compile(r"^(?P<name>.+?)-(?P<version>\d[0-9A-Za-z.]*)(?:-(?P<platform>.+))?\.gemspec$")
_GEMSPEC_NAME = re.compile(r"""\.name\s*=\s*["']([^"']+)["']""")
_GEMSPEC_VERSION = re.compile(r"""\.version\s*=\s*["']([^"']+)["']""")


def _purl(name: str, version: str) -> str:
    return f"pkg:gem/{name}@{version}"


class RubyDetector(Detector):
    name = "ruby"

    def wants(self, path: str, head: bytes) -> bool:
        base = basename(path)
        if base in ("Gemfile.lock", "gems.locked"):
            return True
        return base.endswith(".gemspec") and "/specifications/" in f"/{path}"

    def feed(self, path: str, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        base = basename(path)
        if base.endswith(".gemspec"):
            n, v = _GEMSPEC_NAME.search(text), _GEMSPEC_VERSION.search(text)
            if n and v:
                self.add("RubyGems", n[1], v[1], path, "gemspec", _purl(n[1], v[1]))
                return
            m = _GEMSPEC_FILE.match(base)
            if m:
                self.add("RubyGems", m["name"], m["version"], path, "gemspec", _purl(m["name"], m["version"]))
            else:
                self.note(path, "gemspec without a readable name/version")
            return
        section = ""
        for line in text.splitlines():
            if line and not line[0].isspace():
                section = line.strip()
                continue
            if section != "GEM":
                continue
            m = _SPEC.match(line)
            if m:
                version = m[2].split("-", 1)[0]  # drop platform suffix: 1.13.10-x86_64-linux
                self.add("RubyGems", m[1], version, path, "Gemfile.lock", _purl(m[1], version))
