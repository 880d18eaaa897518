"""Issue 14 item 1: the README's embed flow works out of the box. A console without a standalone build
serves only the launcher; `garrison embed --console …` then embeds the standalone defender (built and
cached in dist/ if needed) and says so, `--launcher` embeds the launcher on purpose and says what it
needs, `garrison run-droplet` runs a launcher droplet with this machine's Garrison, and embed/undo keep
the droplet's file mode."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from garrison.console.services.defender_image import LAUNCHER
from garrison.embed import cli as embed_cli
from garrison.embed.runner import free_port
from garrison.embed.standalone import LAUNCHER_MARK, inspect_defender
from tests.embed.droplets import build_droplet, members, read_member

GARRISON = [sys.executable, "-m", "garrison"]


def _embed(console: Any, droplet: Path, manifest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GARRISON, "embed", str(droplet), "-m", str(manifest), "--console", console.url,
         "-u", console.admin_user, "-p", console.admin_password, "--cacert", str(console.ca_path), *extra],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def _serve(droplet: Path, manifest: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    log = workdir / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*GARRISON, "run-droplet", str(droplet), "-m", str(manifest), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return proc, port, log


def _get(url: str, proc: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except OSError:
            assert proc.poll() is None, f"the droplet exited ({proc.returncode}):\n{log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.mark.slow
def test_readme_flow_embeds_the_standalone_defender(
    console: Any, defender_tarball: Path, tmp_path: Path
) -> None:
    """The README's "try it locally" steps against a console that serves only the launcher: embed takes
    the standalone build instead and says so, and the droplet runs protected."""
    from garrison.demo.runner import DEMO_APP, DEMO_RULE

    rules = [r for r in console.policy()["rules"] if r["name"] != DEMO_RULE["name"]]
    console.put_policy({"rules": [DEMO_RULE, *rules]})
    with console.api() as c:
        served = c.get("/images/garrison_defender_app_embedded.tar.gz").content
    with tarfile.open(fileobj=io.BytesIO(served)) as tf:
        assert tf.getnames() == ["defender"]  # the launcher
    droplet = tmp_path / "sample.tgz"
    r = subprocess.run([*GARRISON, "demo", "--write-droplet", str(droplet)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    manifest = tmp_path / "manifest.yml"
    manifest.write_text(f"applications:\n- name: {DEMO_APP}\n")
    r = _embed(console, droplet, manifest)
    assert r.returncode == 0, r.stderr
    assert "standalone defender" in r.stderr and "glibc >= 2." in r.stderr, r.stderr
    assert "no Python" in r.stderr and "garrison run-droplet" in r.stderr
    assert "app/.garrison/defender_lib" in members(droplet)
    assert read_member(droplet, "app/.garrison/defender")[:4] == b"\x7fELF"

    proc, port, log = _serve(droplet, manifest, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        assert _get(f"{base}/run?cmd=date", proc, log)["exit"] == 0
        for attack in ("/run?cmd=bash", "/run?cmd=sh+-c+id"):  # the process control, then the CNAF
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + attack, timeout=10)
            assert refused.value.code == 403, attack
    finally:
        _stop(proc)


@pytest.mark.slow
def test_launcher_on_purpose_runs_here_and_says_what_it_needs(console: Any, tmp_path: Path) -> None:
    droplet = build_droplet(tmp_path / "shop.tgz")
    manifest = tmp_path / "manifest.yml"
    manifest.write_text("applications:\n- name: launcher-shop\n")
    r = _embed(console, droplet, manifest, "--launcher")
    assert r.returncode == 0, r.stderr
    assert "LAUNCHER defender" in r.stderr, r.stderr
    assert "garrison` Python package" in r.stderr and "exits 127" in r.stderr
    assert LAUNCHER_MARK in read_member(droplet, "app/.garrison/defender")

    proc, port, log = _serve(droplet, manifest, tmp_path)
    try:  # without the Garrison of this machine the launcher would exit 127 (issue 14)
        assert _get(f"http://127.0.0.1:{port}/", proc, log) == {"hello": "hello from profile.d"}
        env = _get(f"http://127.0.0.1:{port}/env", proc, log)
        assert env["GARRISON_DEFENDER_PYTHON"] == sys.executable
        # the manifest's DATA_FOLDER /tmp becomes this droplet's own tmp/, as in a container
        assert env["DATA_FOLDER"] != "/tmp" and env["DATA_FOLDER"] == env["TMPDIR"]
    finally:
        _stop(proc)
    assert "is the LAUNCHER defender; running it with this machine's Garrison" in log.read_text()


def test_builds_the_standalone_defender_when_none_is_at_hand(
    defender_tarball: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """No local build and a launcher from the console: embed runs scripts/build-defender (cached here)."""
    launcher = tmp_path / "launcher.tgz"
    with tarfile.open(launcher, "w:gz") as tf:
        data = LAUNCHER.encode()
        ti = tarfile.TarInfo("defender")
        ti.size, ti.mode = len(data), 0o755
        tf.addfile(ti, io.BytesIO(data))
    monkeypatch.setattr(embed_cli, "default_defender_source", lambda: None)
    info = embed_cli.choose_defender(None, launcher, build=True, launcher_ok=False)
    assert info.kind == "standalone" and info.source == defender_tarball
    err = capfd.readouterr().err
    assert "the console serves only the launcher; building the standalone defender" in err
    assert "up to date (cached): dist/" in err or "built: dist/" in err  # cached unless sources changed
    # --no-build keeps the launcher (and embed announces it loudly); --launcher picks it on purpose
    assert embed_cli.choose_defender(None, launcher, build=False, launcher_ok=False).kind == "launcher"
    assert embed_cli.choose_defender(None, launcher, build=True, launcher_ok=True).kind == "launcher"


def test_defender_kinds(defender_tarball: Path, fake_defender: Path, tmp_path: Path) -> None:
    assert LAUNCHER_MARK.decode() in LAUNCHER  # the console's launcher is recognised as such
    info = inspect_defender(defender_tarball)
    assert info.kind == "standalone" and info.arch in ("x86_64", "aarch64")
    assert info.glibc.startswith("2.") and int(info.glibc.split(".")[1]) <= 35
    assert inspect_defender(fake_defender).kind == "custom"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o664])
def test_embed_and_undo_keep_the_file_mode(fake_defender: Path, tmp_path: Path, mode: int) -> None:
    droplet = build_droplet(tmp_path / "shop.tgz")
    droplet.chmod(mode)
    for args in (["--defender", str(fake_defender)], ["--undo"]):
        r = subprocess.run([*GARRISON, "embed", str(droplet), *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert droplet.stat().st_mode & 0o777 == mode, (args, oct(droplet.stat().st_mode))
    out = tmp_path / "out.tgz"  # a new output file takes the input's mode
    r = subprocess.run(
        [*GARRISON, "embed", str(droplet), "-o", str(out), "--defender", str(fake_defender)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert out.stat().st_mode & 0o777 == mode
