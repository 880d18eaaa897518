"""CNAF in front of a real app: the defender owns $PORT, the app serves on an internal port."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.defender.helpers import Sandbox, defender_command, rule, unpriv_python

APP = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the app"
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_cnaf_blocks_sqli_and_passes_benign(sandbox: Sandbox) -> None:
    py, pyenv = unpriv_python()
    sandbox.write("web.py", APP, mode=0o644)
    import json

    pol = rule(cnaf={"enabled": True, "effects": {"sqli": "prevent"}})
    (sandbox.root / "p.json").write_text(json.dumps(pol))
    port = _free_port()
    p = subprocess.Popen(
        defender_command(["--policy", str(sandbox.root / "p.json"), py, "web.py"]),
        cwd=sandbox.app,
        env={
            "PATH": "/usr/bin:/bin",
            "DATA_FOLDER": str(sandbox.data),
            "PORT": str(port),
            "DEFENDER_CNAF_HOST": "127.0.0.1",
            **pyenv,
        },
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or p.poll() is not None:
                pytest.fail(f"app behind CNAF never answered: {p.stderr.read() if p.stderr else ''}")
            time.sleep(0.1)
        assert body == "hello from the app"
        status, _ = _get(f"http://127.0.0.1:{port}/items?id=1%27%20OR%20%271%27=%271")
        assert status == 403
    finally:
        p.terminate()
        p.wait(20)
    audits = [json.loads(x) for x in (sandbox.data / "garrison-audit.jsonl").read_text().splitlines()]
    assert [a for a in audits if a["type"] == "cnaf" and a["effect"] == "prevent"]
