"""Python packages: installed dist-info/egg-info metadata and requirements/Pipfile.lock/poetry.lock pins."""

from __future__ import annotations

import json
import re
import tomllib

from packaging.utils import canonicalize_name

from garrison.scan.inventory.interface import Detector, basename

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*([^\s;#\\]+)")


def _purl(name: str, version: str) -> str:
    return f"pkg:pypi/{canonicalize_name(name)}@{version}"


def _headers(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version") and key not in out:
            out[key] = value.strip()
    return out


class PythonDetector(Detector):
    name = "python"

    def wants(self, path: str, head: bytes) -> bool:
        base = basename(path)
        if base == "METADATA":
            return path.endswith(".dist-info/METADATA")
        if base == "PKG-INFO":
            return path.endswith(".egg-info/PKG-INFO")
        if base.endswith(".egg-info"):
            return True
        if base in ("Pipfile.lock", "poetry.lock"):
            return True
        if not base.endswith(".txt"):
            return False
        return base.startswith("requirements") or "/requirements/" in f"/{path}"

    def feed(self, path: str, data: bytes) -> None:
        base = basename(path)
        text = data.decode("utf-8", "replace")
        try:
            if base in ("METADATA", "PKG-INFO") or base.endswith(".egg-info"):
                h = _headers(text)
                src = "dist-info" if base == "METADATA" else "egg-info"
                if "Name" in h and "Version" in h:
                    self.add("PyPI", h["Name"], h["Version"], path, src, _purl(h["Name"], h["Version"]))
            elif base == "Pipfile.lock":
                doc = json.loads(text)
                for section in ("default", "develop"):
                    for name, meta in (doc.get(section) or {}).items():
                        ver = str((meta or {}).get("version", ""))
                        if ver.startswith("=="):
                            self.add("PyPI", name, ver[2:], path, "Pipfile.lock", _purl(name, ver[2:]))
            elif base == "poetry.lock":
                for pkg in tomllib.loads(text).get("package", []):
                    name, ver = str(pkg.get("name", "")), str(pkg.get("version", ""))
                    self.add("PyPI", name, ver, path, "poetry.lock", _purl(name, ver))
            else:
                for line in text.splitlines():
                    m = _REQ.match(line)
                    if m:
                        self.add("PyPI", m[1], m[2], path, "requirements", _purl(m[1], m[2]))
        except (ValueError, tomllib.TOMLDecodeError, AttributeError) as exc:
            self.note(path, f"unreadable Python metadata: {exc}")
