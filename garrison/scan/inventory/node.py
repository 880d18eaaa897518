"""Node packages as the droplet will run them, and the `node` runtime binary it carries.

The inventory is the installed `node_modules` trees: a `package.json` counts only where it sits in a
chain `node_modules/<pkg>[/node_modules/<pkg>...]/package.json` below a project root (a package's own
test fixtures and the lock files packages ship inside `node_modules/<pkg>/` describe nothing that
runs). An app's lock file (package-lock v1-v3, npm-shrinkwrap, yarn classic/berry) adds locations to
installed packages; it reports packages of its own only where nothing is installed beside it, and
then not its devDependencies (Cloud Foundry's Node.js buildpack installs production dependencies).
"""

from __future__ import annotations

import json
import re
from typing import Any

from garrison.scan.inventory.interface import Detector, basename
from garrison.scan.model import Package
from garrison.scan.vulndb.nodejs_wg import NODE_ECOSYSTEM, NODE_PACKAGE

_YARN_VERSION = re.compile(r'^\s+version:?\s+"?([^"\s]+)"?')
_PKG = r"(?:@[^/]+/[^/.][^/]*|\.pnpm/[^/]+/node_modules/(?:@[^/]+/)?[^/.][^/]*|[^@/.][^/]*)"
_INSTALLED = re.compile(
    rf"^(?P<root>(?:(?!node_modules/)[^/]+/)*)node_modules/(?:{_PKG}/node_modules/)*{_PKG}/package\.json$"
)
_LOCKS = ("package-lock.json", "npm-shrinkwrap.json", "yarn.lock")
# process.release.headersUrl, compiled into every official and distribution `node` build
_NODE_RELEASE = re.compile(rb"node-v(\d+\.\d+\.\d+)-headers\.tar\.gz")
_NODE_VERSION_H = re.compile(r"#define NODE_(MAJOR|MINOR|PATCH)_VERSION (\d+)")


def _purl(name: str, version: str) -> str:
    return f"pkg:npm/{name.replace('@', '%40')}@{version}"


def _yarn_name(spec: str) -> str:
    spec = spec.strip().strip('"')
    at = spec.rfind("@")
    return spec[:at] if at > 0 else spec


def _dir(path: str) -> str:
    return path.rsplit("/", 1)[0] + "/" if "/" in path else ""


class NodeDetector(Detector):
    name = "node"

    def __init__(self) -> None:
        super().__init__()
        self.installed: list[Package] = []
        self.roots: dict[str, set[tuple[str, str]]] = {}  # project root -> installed (name, version)
        self.locked: list[tuple[str, Package, bool]] = []  # (lock's dir, package, dev only)

    def wants(self, path: str, head: bytes) -> bool:
        base = basename(path)
        if base == "package.json":
            return _INSTALLED.match(path) is not None
        return base in _LOCKS and "node_modules/" not in path and not path.startswith("node_modules")

    def feed(self, path: str, data: bytes) -> None:
        base = basename(path)
        try:
            if base == "package.json":
                m = _INSTALLED.match(path)
                doc = json.loads(data)
                name, ver = str(doc.get("name", "")).strip(), str(doc.get("version", "")).strip()
                if m and name and ver:
                    self.installed.append(self._pkg(name, ver, path, "node_modules"))
                    self.roots.setdefault(m["root"], set()).add((name, ver))
            elif base == "yarn.lock":
                self._yarn(path, data.decode("utf-8", "replace"))
            else:
                self._lock(path, json.loads(data))
        except (ValueError, AttributeError, TypeError) as exc:
            self.note(path, f"unreadable Node metadata: {exc}")

    @staticmethod
    def _pkg(name: str, ver: str, path: str, source: str) -> Package:
        return Package(
            ecosystem="npm", name=name, version=ver, purl=_purl(name, ver), locations=[path], source=source
        )

    def _locked(self, path: str, name: str, ver: str, source: str, dev: bool) -> None:
        name, ver = name.strip(), ver.strip()
        if name and ver and not ver.startswith(("file:", "link:", "git", "http")):
            self.locked.append((_dir(path), self._pkg(name, ver, path, source), dev))

    def _lock(self, path: str, doc: dict[str, Any]) -> None:
        packages = doc.get("packages")
        if isinstance(packages, dict) and packages:
            for key, meta in packages.items():
                if not key or not isinstance(meta, dict) or meta.get("link"):
                    continue
                name = meta.get("name") or key.rsplit("node_modules/", 1)[-1]
                dev = bool(meta.get("dev") or meta.get("devOptional"))
                self._locked(path, str(name), str(meta.get("version", "")), "package-lock", dev)
            return
        stack = [doc.get("dependencies") or {}]
        while stack:
            deps = stack.pop()
            for name, meta in deps.items():
                if isinstance(meta, dict):
                    self._locked(
                        path, name, str(meta.get("version", "")), "package-lock", bool(meta.get("dev"))
                    )
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
                        self._locked(path, name, ver, "yarn.lock", False)
                names = []

    def finish(self) -> list[Package]:
        out = list(self.installed)
        uninstalled: dict[str, int] = {}
        for lock_dir, pkg, dev in self.locked:
            installed = self.roots.get(lock_dir)
            if installed:
                if (pkg.name, pkg.version) in installed:
                    out.append(pkg)  # same package: only adds the lock as a location
                continue
            if dev:
                continue
            out.append(pkg)
            uninstalled[pkg.locations[0]] = uninstalled.get(pkg.locations[0], 0) + 1
        for lock, n in uninstalled.items():
            self.note(lock, f"no node_modules installed beside this lock file: {n} packages reported from it")
        return out


class NodeRuntimeDetector(Detector):
    """The `node` binary (e.g. deps/0/node/bin/node from the Node.js buildpack), matched against the
    Node.js core advisories; its version comes from the release URL compiled into it, or from the
    `node_version.h` header shipped beside it."""

    name = "node-runtime"

    def wants(self, path: str, head: bytes) -> bool:
        if path.endswith("include/node/node_version.h"):
            return True
        base = basename(path)
        return base in ("node", "nodejs") and path.endswith(f"bin/{base}") and head.startswith(b"\x7fELF")

    def feed(self, path: str, data: bytes) -> None:
        if path.endswith(".h"):
            parts = dict(_NODE_VERSION_H.findall(data.decode("utf-8", "replace")))
            if {"MAJOR", "MINOR", "PATCH"} <= parts.keys():
                self._add(f"{parts['MAJOR']}.{parts['MINOR']}.{parts['PATCH']}", path, "node_version.h")
            return
        m = _NODE_RELEASE.search(data)
        if m:
            self._add(m[1].decode(), path, "node binary")
        else:
            self.note(path, "node binary without a release version string: runtime not identified")

    def _add(self, version: str, path: str, source: str) -> None:
        self.add(NODE_ECOSYSTEM, NODE_PACKAGE, version, path, source, f"pkg:generic/node@{version}")
