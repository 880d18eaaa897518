"""Buildpack and console outages / per-app overrides (issue 18 item 6): `require_console: false` stages
on the bundled or default policy when the console is down, `true` fails staging; GARRISON_CONSOLE_URL,
GARRISON_TOKEN and GARRISON_CA_CERT from the app's environment override what the buildpack bundles."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from garrison.scan.vulndb.index import VulnIndex
from tests.scan import test_buildpack
from tests.scan.helpers import REPO, StubConsole, write_tree
from tests.scan.test_buildpack import stage

shim = test_buildpack.shim  # GARRISON_BIN for a staging container without a vendored binary


@pytest.fixture
def small_db(tmp_path: Path) -> Path:
    db = tmp_path / "db"
    adv = {
        "id": "X-1",
        "modified": "2026-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "nope"}, "versions": ["1"]}],
    }
    with VulnIndex(db, create=True) as ix:
        ix.import_advisories([adv], "test")
    return db


@pytest.fixture
def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A console that accepts connections and never answers (hung, overloaded)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        yield int(s.getsockname()[1])
    finally:
        s.close()


def export(tmp: Path, name: str, *args: str) -> Path:
    r = subprocess.run(
        [sys.executable, "-m", "garrison", "buildpack", "export", str(tmp / name), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return tmp / name


def test_console_down_stages_unless_required(
    tmp_path: Path, small_db: Path, shim: str, closed_port: int
) -> None:
    url = f"https://127.0.0.1:{closed_port}"
    app = write_tree(tmp_path / "app", {"main.py": "print(1)\n"})
    lax = export(tmp_path, "lax", "--db", str(small_db), "--console", url)
    (tmp_path / "w1").mkdir()
    run, deps = stage(lax, app, shim, tmp_path / "w1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "cannot load the assurance policy from the console" in run.stdout
    assert "applying the default assurance policy" in run.stdout and "could not report" in run.stdout
    assert "assurance policy 'default': PASS" in run.stdout
    assert (deps / "1" / "garrison-identity.json").exists()  # the gate still learns what was staged

    strict = export(tmp_path, "strict", "--db", str(small_db), "--console", url, "--require-console")
    (tmp_path / "w2").mkdir()
    run, _ = stage(strict, app, shim, tmp_path / "w2")
    assert run.returncode == 2, run.stdout
    assert "the console is required (require_console); failing staging" in run.stdout
    # per app: GARRISON_REQUIRE_CONSOLE overrides the bundled switch both ways
    (tmp_path / "w3").mkdir()
    run, _ = stage(lax, app, shim, tmp_path / "w3", {"GARRISON_REQUIRE_CONSOLE": "true"})
    assert run.returncode == 2 and "console is required" in run.stdout
    (tmp_path / "w4").mkdir()
    run, _ = stage(strict, app, shim, tmp_path / "w4", {"GARRISON_REQUIRE_CONSOLE": "false"})
    assert run.returncode == 0, run.stdout


def test_hung_console_times_out(tmp_path: Path, small_db: Path, shim: str, silent_port: int) -> None:
    bp = export(tmp_path, "bp", "--db", str(small_db), "--console", f"http://127.0.0.1:{silent_port}")
    app = write_tree(tmp_path / "app", {"main.py": "print(1)\n"})
    run, _ = stage(bp, app, shim, tmp_path, {"GARRISON_CONSOLE_TIMEOUT": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "WARNING: cannot load the assurance policy" in run.stdout


def test_app_environment_overrides_the_bundled_console(
    tmp_path: Path, small_db: Path, shim: str, closed_port: int
) -> None:
    bp = export(
        tmp_path,
        "bp",
        "--db",
        str(small_db),
        "--console",
        f"http://127.0.0.1:{closed_port}",
        "--token",
        "bundled",
    )
    app = write_tree(tmp_path / "app", {"main.py": "print(1)\n"})
    with StubConsole(policy={"name": "per-app", "thresholds": {"high": 0}}, token="app-token") as console:
        run, deps = stage(
            bp,
            app,
            shim,
            tmp_path,
            {
                "GARRISON_CONSOLE_URL": console.url,
                "GARRISON_TOKEN": "app-token",
                "GARRISON_REQUIRE_CONSOLE": "1",
            },
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"assurance policy 'per-app' from {console.url}" in run.stdout
        assert len(console.reports) == 1
        rep = console.reports[0]
    assert rep["source"] == "staging" and rep["app"]["name"] == "shop" and rep["policy"] == "per-app"
    ident = json.loads((deps / "1" / "garrison-identity.json").read_text())
    assert rep["digest"] == ident["digest"] and ident["phase"] == "supply"


def test_ca_cert_from_the_environment(tmp_path: Path, small_db: Path, shim: str) -> None:
    """GARRISON_CA_CERT as a path that does not exist fails the console call (and says so), proving the
    variable is used; with require_console the staging fails, without it the build goes on."""
    bp = export(tmp_path, "bp", "--db", str(small_db), "--console", "https://127.0.0.1:9")
    app = write_tree(tmp_path / "app", {"main.py": "print(1)\n"})
    run, _ = stage(bp, app, shim, tmp_path, {"GARRISON_CA_CERT": str(tmp_path / "missing-ca.pem")})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "missing-ca.pem" in run.stdout
