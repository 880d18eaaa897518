"""`garrison run-droplet`: CF-like env, profile scripts, HTTP app, signals and exit status."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from garrison.embed.runner import free_port
from tests.embed.droplets import build_droplet

GARRISON = [sys.executable, "-m", "garrison"]


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return bytes(r.read())
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"runner exited with {proc.returncode} before serving") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="the sample app needs /usr/bin/python3")
def test_runs_web_app_like_cf(tmp_path: Path) -> None:
    droplet = build_droplet(tmp_path / "shop.tgz")
    port = free_port()
    root = tmp_path / "home" / "vcap"
    proc = subprocess.Popen(
        [*GARRISON, "run-droplet", str(droplet), "--port", str(port), "--dir", str(root),
         "--org", "acme", "--space", "prod", "--instance-index", "2", "-e", "EXTRA=1"],
    )  # fmt: skip
    try:
        assert json.loads(wait_http(f"http://127.0.0.1:{port}/", proc)) == {"hello": "hello from profile.d"}
        env = json.loads(wait_http(f"http://127.0.0.1:{port}/env", proc))
        assert env["HOME"] == str(root / "app")
        assert env["PWD"] == str(root / "app")
        assert env["PORT"] == str(port)
        assert env["CF_INSTANCE_INDEX"] == "2" and env["CF_INSTANCE_ADDR"] == f"127.0.0.1:{port}"
        assert env["MEMORY_LIMIT"] == "512m" and env["EXTRA"] == "1"
        assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
        vcap = json.loads(env["VCAP_APPLICATION"])
        assert (vcap["application_name"], vcap["organization_name"], vcap["space_name"]) == (
            "shop",
            "acme",
            "prod",
        )
        assert vcap["instance_index"] == 2 and vcap["limits"]["mem"] == 512
        assert "VIRTUAL_ENV" not in env  # built from scratch, not inherited
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    assert rc == 128 + signal.SIGTERM  # the app got SIGTERM, and its status came back like a shell's


def test_profile_order_manifest_env_and_exit_status(tmp_path: Path) -> None:
    droplet = build_droplet(
        tmp_path / "w.tgz",
        app_files={".profile.d/b.sh": b"export ORDER=${ORDER}b\n", ".profile": b"export ORDER=${ORDER}c\n"},
        profile=b"export ORDER=a\n",
        start_command="echo staged",
    )
    manifest = tmp_path / "manifest.yml"
    manifest.write_text(
        "applications:\n- name: worker\n  memory: 1G\n  command: echo $ORDER $FROM_MANIFEST $MEMORY_LIMIT; exit 7\n"
        "  env:\n    FROM_MANIFEST: yes-m\n"
    )
    r = subprocess.run(
        [*GARRISON, "run-droplet", str(droplet), "-m", str(manifest), "--port", "0"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 7, r.stderr
    assert r.stdout.strip() == "abc yes-m 1024m"


def test_bad_input(tmp_path: Path) -> None:
    r = subprocess.run([*GARRISON, "run-droplet", str(tmp_path / "none.tgz")], capture_output=True, text=True)
    assert r.returncode == 2 and "no such file" in r.stderr
    droplet = build_droplet(tmp_path / "w.tgz")
    r = subprocess.run(
        [*GARRISON, "run-droplet", str(droplet), "-e", "NOEQUALS"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr
