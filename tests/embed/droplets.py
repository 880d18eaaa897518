"""Build droplets (and hostile archives) for the embed and UI tests."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

WEB_APP = """\
import json, os, socket, subprocess, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/env":
            return self._reply(200, dict(os.environ))
        if self.path.startswith("/exec"):
            try:
                out = subprocess.run(["/bin/sh", "-c", "echo shell"], capture_output=True, timeout=10)
                return self._reply(200, {"rc": out.returncode, "out": out.stdout.decode()})
            except OSError as e:
                return self._reply(200, {"error": e.errno, "msg": str(e)})
        if self.path.startswith("/connect/"):
            port = int(self.path.rsplit("/", 1)[1])
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", port))
                return self._reply(200, {"connected": True})
            except OSError as e:
                return self._reply(200, {"connected": False, "error": e.errno})
            finally:
                s.close()
        return self._reply(200, {"hello": os.environ.get("GREETING", "")})


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def _add(tf: tarfile.TarFile, name: str, data: bytes | None = None, **kw: object) -> None:
    ti = tarfile.TarInfo(name)
    for k, v in kw.items():
        setattr(ti, k, v)
    if data is not None:
        ti.size = len(data)
        ti.mode = kw.get("mode", 0o644)  # type: ignore[assignment]
    elif "type" not in kw:
        ti.type = tarfile.DIRTYPE
        ti.mode = 0o755
    tf.addfile(ti, io.BytesIO(data) if data is not None else None)


def build_droplet(
    path: Path,
    *,
    start_command: str = "python3 app.py",
    app_files: dict[str, bytes] | None = None,
    profile: bytes = b'export GREETING="hello from profile.d"\n',
    staging: bytes | None = None,
) -> Path:
    """A droplet laid out as CF stores it: ./app, ./deps, ./profile.d, ./tmp, ./logs, ./staging_info.yml."""
    files = {"app.py": WEB_APP.encode()} if app_files is None else app_files
    with tarfile.open(path, "w:gz") as tf:
        for d in ("./", "./app/", "./deps/", "./deps/0/", "./profile.d/", "./tmp/", "./logs/"):
            _add(tf, d, uid=2000, gid=2000)
        for name, data in files.items():
            _add(tf, f"./app/{name}", data, uid=2000, gid=2000)
        _add(tf, "./profile.d/000_greeting.sh", profile)
        info = (
            staging
            or json.dumps(
                {"detected_buildpack": "python", "start_command": start_command}, separators=(",", ":")
            ).encode()
        )
        _add(tf, "./staging_info.yml", info)
    return path


def hostile(path: Path, *members: tuple[str, dict[str, object], bytes | None]) -> Path:
    """A droplet-looking archive with extra members (name, TarInfo attributes, data)."""
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "./app/")
        _add(tf, "./app/app.py", b"print('hi')\n")
        _add(tf, "./staging_info.yml", b'{"start_command":"python3 app.py"}')
        for name, attrs, data in members:
            _add(tf, name, data, **attrs)
    return path


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tf:
        return {m.name.removeprefix("./").rstrip("/"): m for m in tf.getmembers()}


def read_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            if m.name.removeprefix("./") == name:
                f = tf.extractfile(m)
                assert f is not None
                return f.read()
    raise KeyError(name)
