"""Builders for test droplets, Go binaries, jars and a stub console for the scanner tests."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import threading
import zipfile
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VULNDB = (REPO / ".." / "shared" / "vulndb").resolve()


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def go_modinfo(
    main: str, deps: list[tuple[str, str]], replace: dict[str, tuple[str, str]] | None = None
) -> str:
    lines = [f"path\t{main}", f"mod\t{main}\t(devel)\t"]
    for name, ver in deps:
        lines.append(f"dep\t{name}\t{ver}\th1:abc=")
        if replace and name in replace:
            lines.append(f"=>\t{replace[name][0]}\t{replace[name][1]}\th1:def=")
    sentinel_start = bytes.fromhex("3077af0c9274080241e1c107e6d618e6").decode("latin-1")
    sentinel_end = bytes.fromhex("f932433186182072008242104116d8f2").decode("latin-1")
    return sentinel_start + "\n".join(lines) + "\n" + sentinel_end


def go_binary_inline(go_version: str, modinfo: str) -> bytes:
    """A fake ELF file carrying a Go 1.18+ build info blob (inline strings, flags bit 2)."""
    header = b"\xff Go buildinf:" + bytes([8, 2]) + b"\0" * 16
    mod = modinfo.encode("latin-1")
    blob = header + uvarint(len(go_version)) + go_version.encode() + uvarint(len(mod)) + mod
    body = b"\x7fELF" + b"\0" * 60 + b"\x90" * 4032  # pad so the blob sits 16-byte aligned at 4096
    return body + blob + b"\0" * 64


def go_binary_legacy(go_version: str, modinfo: str) -> bytes:
    """A minimal ELF64 with one PT_LOAD segment and a pre-1.18 (pointer) build info header."""
    base = 0x400000
    mod = modinfo.encode("latin-1")
    ver = go_version.encode()
    info_off, strhdr_off, data_off = 0x100, 0x140, 0x180
    ver_addr = base + data_off
    mod_addr = ver_addr + len(ver)
    file = bytearray(data_off + len(ver) + len(mod))
    ehdr = struct.pack(
        "<4sBBBBB7sHHIQQQIHHHHHH",
        b"\x7fELF",
        2,
        1,
        1,
        0,
        0,
        b"\0" * 7,
        2,
        0x3E,
        1,
        base,
        64,
        0,
        0,
        64,
        56,
        1,
        0,
        0,
        0,
    )
    file[0:64] = ehdr
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, len(file), len(file), 0x1000)
    file[64:120] = phdr
    hdr = b"\xff Go buildinf:" + bytes([8, 0]) + struct.pack("<QQ", base + strhdr_off, base + strhdr_off + 16)
    file[info_off : info_off + 32] = hdr
    file[strhdr_off : strhdr_off + 32] = struct.pack("<QQQQ", ver_addr, len(ver), mod_addr, len(mod))
    file[data_off : data_off + len(ver)] = ver
    file[data_off + len(ver) :] = mod
    return bytes(file)


def jar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def pom(group: str, artifact: str, version: str) -> dict[str, bytes]:
    return {
        f"META-INF/maven/{group}/{artifact}/pom.properties": (
            f"#Generated\ngroupId={group}\nartifactId={artifact}\nversion={version}\n"
        ).encode()
    }


def write_tree(root: Path, files: Mapping[str, bytes | str]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


def make_droplet(path: Path, files: Mapping[str, bytes | str], *, prefix: str = "./") -> Path:
    """A CF-style droplet: gzip tar with ./app, ./deps ... entries."""
    with tarfile.open(path, "w:gz") as tf:
        for rel, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(prefix + rel)
            info.size = len(raw)
            info.mode = 0o755 if rel.endswith(".bin") else 0o644
            tf.addfile(info, io.BytesIO(raw))
    return path


def osv(
    ident: str,
    name: str,
    *,
    fixed: str | None = None,
    versions: list[str] | None = None,
    vector: str | None = None,
    ecosystem: str = "PyPI",
    modified: str = "2026-11-01T00:00:00Z",
    **extra: Any,
) -> dict[str, Any]:
    """A minimal OSV record: one package, affected from 0 to `fixed` (or the listed `versions`)."""
    affected: dict[str, Any] = {"package": {"ecosystem": ecosystem, "name": name}}
    if fixed is not None:
        affected["ranges"] = [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}]
    if versions is not None:
        affected["versions"] = versions
    rec: dict[str, Any] = {"id": ident, "modified": modified, "affected": [affected], **extra}
    if vector:
        rec["severity"] = [{"type": "CVSS_V3", "score": vector}]
    return rec


def dist_info(name: str, version: str) -> dict[str, str]:
    site = "deps/0/python/lib/python3.11/site-packages"
    return {
        f"{site}/{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nbody\n"
    }


class StubConsole:
    """Loopback HTTP server speaking the console's scan endpoints (policy, scans, verdict)."""

    def __init__(self, policy: dict[str, Any] | None = None, token: str = "tok") -> None:
        self.policy = policy or {}
        self.token = token
        self.reports: list[dict[str, Any]] = []
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.rows: dict[int, dict[str, Any]] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _authed(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {stub.token}":
                    self._send(401, {"detail": "unauthorized"})
                    return False
                return True

            def do_GET(self) -> None:
                if not self._authed():
                    return
                if self.path == "/api/v1/policies/assurance":
                    self._send(200, stub.policy)
                elif self.path.startswith("/api/v1/scans/verdict"):
                    from urllib.parse import parse_qs, urlparse

                    digest = parse_qs(urlparse(self.path).query)["digest"][0]
                    if digest in stub.verdicts:
                        self._send(200, stub.verdicts[digest])
                    else:  # like the console: no scan for this digest
                        self._send(404, {"detail": f"no scan for digest {digest!r}"})
                elif self.path.startswith("/api/v1/scans/") and self.path.rsplit("/", 1)[-1].isdigit():
                    row = stub.rows.get(int(self.path.rsplit("/", 1)[-1]))
                    self._send(200 if row else 404, row or {"detail": "no scan"})
                else:
                    self._send(404, {"detail": "not found"})

            def do_POST(self) -> None:
                if not self._authed():
                    return
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n))
                stub.reports.append(body)
                self._send(201, {"id": len(stub.reports)})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StubConsole:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
