"""Java packages: pom.properties inside jars (nested BOOT-INF/WEB-INF libs too), MANIFEST fallback.

Jars are opened in memory (zipfile over bytes) up to a nesting depth and size limit, so a zip bomb in
a jar costs at most `max_member` bytes per member and nothing touches the disk.
"""

from __future__ import annotations

import io
import zipfile

from garrison.scan.inventory.interface import Detector, basename

_JAR_EXT = (".jar", ".war", ".ear")
MAX_DEPTH = 3
MAX_MEMBER = 64 << 20


def _props(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            k, sep, v = line.partition("=")
            if sep:
                out[k.strip()] = v.strip()
    return out


def _manifest(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if line.startswith(" ") and last:
            out[last] += line[1:]
            continue
        k, sep, v = line.partition(":")
        if sep:
            last = k.strip()
            out[last] = v.strip()
    return out


def _purl(group: str, artifact: str, version: str) -> str:
    return f"pkg:maven/{group}/{artifact}@{version}"


class JavaDetector(Detector):
    name = "java"

    def wants(self, path: str, head: bytes) -> bool:
        if path.lower().endswith(_JAR_EXT):
            return True
        return path.endswith("/pom.properties") and "META-INF/maven/" in path

    def feed(self, path: str, data: bytes) -> None:
        if path.endswith("/pom.properties"):
            self._pom(path, data)
            return
        self._jar(path, data, 0)

    def _pom(self, path: str, data: bytes) -> bool:
        p = _props(data.decode("utf-8", "replace"))
        g, a, v = p.get("groupId", ""), p.get("artifactId", ""), p.get("version", "")
        if g and a and v:
            self.add("Maven", f"{g}:{a}", v, path, "pom.properties", _purl(g, a, v))
            return True
        return False

    def _jar(self, path: str, data: bytes, depth: int) -> None:
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, ValueError, OSError) as exc:
            self.note(path, f"not a readable jar: {exc}")
            return
        found = False
        manifest: dict[str, str] = {}
        with zf:
            for info in zf.infolist():
                name = info.filename
                if info.is_dir():
                    continue
                inner = f"{path}!/{name}"
                try:
                    if name.startswith("META-INF/maven/") and name.endswith("/pom.properties"):
                        if info.file_size <= 1 << 20:
                            found = self._pom(inner, zf.read(info)) or found
                    elif name == "META-INF/MANIFEST.MF" and info.file_size <= 1 << 20:
                        manifest = _manifest(zf.read(info).decode("utf-8", "replace"))
                    elif name.lower().endswith(_JAR_EXT):
                        if depth + 1 > MAX_DEPTH:
                            self.note(inner, f"jar nested deeper than {MAX_DEPTH} levels, not opened")
                        elif info.file_size > MAX_MEMBER:
                            self.note(inner, f"nested jar larger than {MAX_MEMBER} bytes, not opened")
                        else:
                            self._jar(inner, zf.read(info), depth + 1)
                except (zipfile.BadZipFile, OSError, RuntimeError, EOFError, ValueError) as exc:
                    self.note(inner, f"unreadable jar member: {exc}")
        if not found and manifest:
            self._from_manifest(path, manifest)

    def _from_manifest(self, path: str, mf: dict[str, str]) -> None:
        """No pom.properties: best effort from OSGi / Implementation headers (group may be a guess)."""
        version = mf.get("Bundle-Version") or mf.get("Implementation-Version") or ""
        group = mf.get("Implementation-Vendor-Id", "")
        artifact = mf.get("Implementation-Title", "")
        bsn = mf.get("Bundle-SymbolicName", "").split(";", 1)[0].strip()
        if not (group and artifact) and bsn and "." in bsn:
            group, artifact = bsn.rsplit(".", 1)
        if not artifact:
            stem = basename(path).rsplit(".", 1)[0]
            if version and stem.endswith("-" + version):
                stem = stem[: -len(version) - 1]
            artifact = stem
        if version and artifact:
            name = f"{group}:{artifact}" if group else artifact
            self.add(
                "Maven", name, version, path, "MANIFEST.MF", _purl(group or "unknown", artifact, version)
            )
