"""End to end, as the README tells an operator: a droplet of a small Python web app, the standalone
defender embedded with `garrison embed`, run with `garrison run-droplet` like a Diego cell (as an
unprivileged user when we are root), against a real console; a denied process and a denied
connection are refused in the app and both audits reach the console."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from garrison.embed.runner import free_port
from tests.embed.droplets import build_droplet

pytestmark = pytest.mark.slow
APP = "e2e-embedded-shop"
NOBODY = 65534


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Outside pytest's 0700 tmp tree so the unprivileged app user can reach it."""
    d = Path(tempfile.mkdtemp(prefix="garrison-e2e-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def get(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"droplet exited ({proc.returncode}):\n{log.read_text()}") from None
            if time.monotonic() > deadline:
                raise AssertionError(f"droplet not serving:\n{log.read_text()}") from None
            time.sleep(0.2)


def audits(console: Any, **params: str) -> list[dict[str, Any]]:
    with console.api() as c:
        r = c.get("/audits/runtime/app-embedded", params={"app": APP, **params})
        r.raise_for_status()
        return list(r.json())


def wait_audit(console: Any, timeout: float = 30, **params: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = audits(console, **params)
        if got:
            return got[0]
        time.sleep(0.2)
    raise AssertionError(f"no {params} audit for {APP} reached the console")


def test_embedded_droplet_against_a_real_console(console: Any, defender_tarball: Path, workdir: Path) -> None:
    with socket.socket() as blocked:  # a listener the policy forbids connecting to
        blocked.bind(("127.0.0.1", 0))
        blocked.listen()
        denied_port = blocked.getsockname()[1]
        with socket.socket() as allowed:
            allowed.bind(("127.0.0.1", 0))
            allowed.listen()
            allowed_port = allowed.getsockname()[1]
            _run(console, defender_tarball, workdir, denied_port, allowed_port)


def _run(console: Any, tarball: Path, workdir: Path, denied_port: int, allowed_port: int) -> None:
    policy = console.policy()
    rules = [r for r in policy.get("rules", []) if r["name"] != APP]
    rules.insert(0, {
        "name": APP,
        "scope": {"apps": [APP]},
        "processes": {"effect": "prevent", "deny": ["/bin/sh", "/bin/dash", "/usr/bin/sh", "/usr/bin/dash"]},
        "network": {"effect": "prevent", "outbound": {"deny": [f"127.0.0.1:{denied_port}"]}},
    })  # fmt: skip
    console.put_policy({"rules": rules})

    droplet = build_droplet(workdir / "shop.tgz")
    manifest = workdir / "manifest.yml"
    manifest.write_text(f"applications:\n- name: {APP}  # the shop\n  memory: 256M\n")
    bundle = workdir / "bundle.txt"
    bundle.write_text(console.install_bundle())
    data = workdir / "data"
    data.mkdir()
    if os.getuid() == 0:
        os.chown(data, NOBODY, NOBODY)
    garrison = [sys.executable, "-m", "garrison"]
    r = subprocess.run(
        [*garrison, "embed", str(droplet), "-m", str(manifest), "--defender", str(tarball),
         "--install-bundle", f"@{bundle}", "--data-folder", str(data)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "DATA_FOLDER: " + str(data) in manifest.read_text()

    port = free_port()
    log = workdir / "run.log"
    user = ["--user", "nobody"] if os.getuid() == 0 else []
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*garrison, "run-droplet", str(droplet), "-m", str(manifest), "--port", str(port),
             "--dir", str(workdir / "root"), *user],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/", proc, log) == {"hello": "hello from profile.d"}
        shell = get(f"{base}/exec", proc, log)
        assert shell.get("error") == 13, shell  # EACCES: the shell never ran
        assert get(f"{base}/connect/{denied_port}", proc, log)["connected"] is False
        assert get(f"{base}/connect/{allowed_port}", proc, log)["connected"] is True

        proc_audit = wait_audit(console, type="process")
        assert proc_audit["effect"] == "prevent" and proc_audit["rule"] == APP
        assert proc_audit["argv"][:2] == ["/bin/sh", "-c"]
        net_audit = wait_audit(console, type="network")
        assert net_audit["effect"] == "prevent" and net_audit["dest_port"] == denied_port
        assert net_audit["org"] == "local-org" and net_audit["space"] == "local-space"
        with console.api() as c:
            defenders = c.get("/defenders", params={"app": APP}).json()
        assert any(d["connected"] for d in defenders)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 128 + signal.SIGTERM, log.read_text()  # the app's status, through defender and runner
    assert "rule: " + APP in log.read_text()


def test_embed_fetches_bundle_and_defender_from_the_console(console: Any, tmp_path: Path) -> None:
    """`--console` downloads the install bundle and the defender tarball through the API."""
    from garrison.channel.bundle import decode_bundle
    from tests.embed.droplets import members

    droplet = build_droplet(tmp_path / "shop.tgz")
    manifest = tmp_path / "manifest.yml"
    manifest.write_text("applications:\n- name: fetched\n")
    r = subprocess.run(
        [sys.executable, "-m", "garrison", "embed", str(droplet), "-m", str(manifest),
         "--console", console.url, "-u", console.admin_user, "-p", console.admin_password,
         "--cacert", str(console.ca_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "app/.garrison/defender" in members(droplet)
    bundle = manifest.read_text().split("INSTALL_BUNDLE: ", 1)[1].split()[0]
    assert decode_bundle(bundle).ws_address == console.ws_address
    assert f"WS_ADDRESS: {console.ws_address}\n" in manifest.read_text()

    r = subprocess.run(
        [sys.executable, "-m", "garrison", "embed", str(droplet), "--console", console.url,
         "-u", console.admin_user, "-p", "wrong", "--cacert", str(console.ca_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2 and "401" in r.stderr
