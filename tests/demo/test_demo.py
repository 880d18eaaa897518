"""The README's main job, end to end: `garrison demo` brings up a console and a protected sample app;
an attack on the app is refused and its audit reaches the console."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_protects_the_sample_app(tmp_path: Path) -> None:
    app_port = _free_port()
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "garrison",
                "demo",
                "--data-dir",
                str(tmp_path / "d"),
                "--port",
                "0",
                "--defender-port",
                "0",
                "--app-port",
                str(app_port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 120
        while "GARRISON-DEMO-READY" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.25)
        text = log.read_text()
        assert "Admin login: admin / " in text
        app = f"http://127.0.0.1:{app_port}"
        assert httpx.get(f"{app}/run", params={"cmd": "date"}, timeout=10).json()["exit"] == 0
        # A bare program name passes the CNAF, so this one is stopped at exec by the process control.
        denied = httpx.get(f"{app}/run", params={"cmd": "bash"}, timeout=10)
        assert denied.status_code == 403, denied.text
        assert "errno" in denied.json()["error"], denied.text
        # An injected shell command line never reaches the app: the CNAF answers for it.
        injected = httpx.get(f"{app}/run", params={"cmd": "sh -c id"}, timeout=10)
        assert injected.status_code == 403, injected.text

        state = json.loads((tmp_path / "d" / "console" / "console.json").read_text())
        creds = json.loads((tmp_path / "d" / "demo-credentials.json").read_text())
        api = httpx.Client(
            base_url=state["api_url"],
            verify=ssl.create_default_context(cafile=state["ca_pem_path"]),
            auth=(creds["username"], creds["password"]),
        )
        deadline = time.monotonic() + 60
        while True:
            audits = api.get("/audits/runtime/app-embedded", params={"app": "garrison-sample"}).json()
            items = audits if isinstance(audits, list) else audits.get("items", audits.get("audits", []))
            seen = {a.get("type") for a in items if a.get("effect") == "prevent"}
            if {"process", "cnaf"} <= seen:
                break
            assert time.monotonic() < deadline, f"no prevent audit reached the console: {items}"
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-4000:]
