"""Node packages: node_modules/*/package.json, package-lock.json (v1-v3) and yarn.lock (classic and berry)."""

from __future__ import annotations

import json
import re
from typing import Any

from garrison.scan.inventory.interface import Detector, basename

_YARN_VERSION = re.compile(r'^\s+version:?\s+"?([^"\s]+)"?')


def _purl(name: str, version: str) -> str:
    return f"pkg:npm/{name.replace('@', '%40')}@{version}"


def _yarn_name(spec: str) -> str:
    spec = spec.strip().strip('"')
    at = spec.rfind("@")
    return spec[:at] if at > 0 else spec


def _installed_manifest(path: str) -> bool:
    parts = path.split("/")
    if len(parts) >= 3 and parts[-3] == "node_modules":
        return not parts[-2].startswith("@") and not parts[-2].startswith(".")
    return len(parts) >= 4 and parts[-4] == "node_modules" and parts[-3].startswith("@")


class NodeDetector(Detector):
    name = "node"

    def wants(self, path: str, head: bytes) -> bool:
        base = basename(path)
        if base == "package.json":
            return _installed_manifest(path)
        return base in ("package-lock.json", "npm-shrinkwrap.json", "yarn.lock")

    def feed(self, path: str, data: bytes) -> None:
        base = basename(path)
        try:
            if base == "package.json":
                doc = json.loads(data)
                name, ver = str(doc.get("name", "")), str(doc.get("version", ""))
                self.add("npm", name, ver, path, "node_modules", _purl(name, ver))
            elif base == "yarn.lock":
                self._yarn(path, data.decode("utf-8", "replace"))
            else:
                self._lock(path, json.loads(data))
        except (ValueError, AttributeError, TypeError) as exc:
            self.note(path, f"unreadable Node metadata: {exc}")

    def _lock(self, path: str, doc: dict[str, Any]) -> None:
        packages = doc.get("packages")
        if isinstance(packages, dict) and packages:
            for key, meta in packages.items():
                if not key or not isinstance(meta, dict) or meta.get("link"):
                    continue
                name = meta.get("name") or key.rsplit("node_modules/", 1)[-1]
                ver = str(meta.get("version", ""))
                self.add("npm", name, ver, path, "package-lock", _purl(name, ver))
            return
        stack = [doc.get("dependencies") or {}]
        while stack:
            deps = stack.pop()
            for name, meta in deps.items():
                if isinstance(meta, dict):
                    ver = str(meta.get("version", ""))
                    if not ver.startswith(("file:", "link:", "git")):
                        self.add("npm", name, ver, path, "package-lock", _purl(name, ver))
                    if isinstance(meta.get("dependencies"), dict):
                        stack.append(meta["dependencies"])

    def _yarn(self, path: str, text: str) -> None:
        names: list[str] = []
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if not line[0].isspace():
                names = (
                    []
                    if line.startswith("__metadata")
                    else [_yarn_name(s) for s in line.rstrip(":").split(",")]
                )
                continue
            m = _YARN_VERSION.match(line)
            if m and names:
                ver = m[1]
                if not ver.startswith("0.0.0-use.local"):
                    for name in dict.fromkeys(names):
                        self.add("npm", name, ver, path, "yarn.lock", _purl(name, ver))
                names = []
