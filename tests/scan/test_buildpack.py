"""The staging buildpack, exported and run the way Cloud Foundry runs it (build, cache, deps, index)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.scan.helpers import REPO, StubConsole, dist_info, write_tree

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----\n"


def garrison(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "garrison", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


@pytest.fixture
def shim(tmp_path: Path) -> str:
    """GARRISON_BIN: how a staging container without a vendored binary would find the scanner."""
    p = tmp_path / "garrison-shim"
    p.write_text(f'#!/bin/sh\nexec {sys.executable} -m garrison "$@"\n')
    p.chmod(0o755)
    return str(p)


def stage(
    bp: Path, app: Path, shim: str, tmp: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    cache, deps = tmp / "cache", tmp / "deps"
    cache.mkdir(exist_ok=True)
    (deps / "0").mkdir(parents=True, exist_ok=True)
    (deps / "1").mkdir(parents=True, exist_ok=True)
    base = {
        "PATH": os.environ["PATH"],
        "GARRISON_BIN": shim,
        "PYTHONPATH": str(REPO),
        "VCAP_APPLICATION": json.dumps({"application_name": "shop"}),
    }
    d = subprocess.run([str(bp / "bin" / "detect"), str(app)], capture_output=True, text=True, timeout=60)
    assert d.returncode == 0
    r = subprocess.run(
        [str(bp / "bin" / "supply"), str(app), str(cache), str(deps), "1"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**base, **(env or {})},
    )
    return r, deps


def test_export_folder_and_zip(tmp_path: Path, advisory_db: Path) -> None:
    policy = tmp_path / "p.json"
    policy.write_text('{"name": "bp", "thresholds": {"high": 0}}')
    r = garrison(
        "buildpack",
        "export",
        str(tmp_path / "bp"),
        "--db",
        str(advisory_db),
        "--policy",
        str(policy),
        "--zip",
    )
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(tmp_path / "bp.zip") as zf:
        names = set(zf.namelist())
        assert {
            "bin/detect",
            "bin/supply",
            "bin/finalize",
            "garrison-buildpack.json",
            "vulndb/osv.sqlite",
        } <= names
        assert zf.getinfo("bin/supply").external_attr >> 16 & 0o111
    r = garrison("buildpack", "export", str(tmp_path / "bp"))
    assert r.returncode == 2 and "not empty" in r.stderr


def test_supply_passes_clean_app_and_reports(tmp_path: Path, advisory_db: Path, shim: str) -> None:
    with StubConsole(policy={"name": "console-policy", "thresholds": {"high": 0}}) as console:
        r = garrison(
            "buildpack", "export", str(tmp_path / "bp"), "--db", str(advisory_db), "--console", console.url
        )
        assert r.returncode == 0, r.stderr
        app = write_tree(
            tmp_path / "app", {"requirements.txt": "requests==2.32.3\n", "main.py": "print(1)\n"}
        )
        run, deps = stage(tmp_path / "bp", app, shim, tmp_path, {"GARRISON_TOKEN": "tok"})
        assert run.returncode == 0, run.stdout + run.stderr
        assert "assurance policy 'console-policy': PASS" in run.stdout
        assert len(console.reports) == 1 and console.reports[0]["app_name"] == "shop"
        digest = console.reports[0]["digest"]
    assert (deps / "1" / "profile.d" / "garrison.sh").read_text() == (
        f"export GARRISON_DROPLET_DIGEST={digest}\nexport GARRISON_DROPLET_IDX=1\n"
    )
    assert json.loads((deps / "1" / "garrison-scan.json").read_text())["verdict"] == "pass"


def test_supply_fails_staging_readably(tmp_path: Path, advisory_db: Path, shim: str) -> None:
    policy = tmp_path / "p.json"
    policy.write_text('{"name": "strict", "thresholds": {"high": 0}}')
    assert (
        garrison(
            "buildpack", "export", str(tmp_path / "bp"), "--db", str(advisory_db), "--policy", str(policy)
        ).returncode
        == 0
    )
    app = write_tree(tmp_path / "app", {"main.py": "print(1)\n", "certs/server.key": PEM})
    # an earlier supply buildpack installed a vulnerable package into deps/0
    write_tree(tmp_path / "deps" / "0", dist_info("Werkzeug", "2.2.2"))
    run, _ = stage(tmp_path / "bp", app, shim, tmp_path)
    assert run.returncode == 1
    out = run.stdout
    assert "**ERROR** Garrison assurance policy 'strict' failed; staging refused:" in out
    assert "Private Key at certs/server.key:1" in out
    assert "PYSEC-2023-221 in Werkzeug 2.2.2" in out
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw" not in out


def test_finalize_and_missing_scanner(tmp_path: Path, shim: str) -> None:
    (tmp_path / "bad.yaml").write_text("thresholds: {critical: many}\n")
    bad = garrison("buildpack", "export", str(tmp_path / "bp"), "--policy", str(tmp_path / "bad.yaml"))
    assert bad.returncode == 2 and "thresholds.critical" in bad.stderr and not (tmp_path / "bp").exists()
    assert garrison("buildpack", "export", str(tmp_path / "bp")).returncode == 0
    app = write_tree(tmp_path / "app", {"main.py": "print(1)\n"})
    (tmp_path / "deps" / "0").mkdir(parents=True)
    env = {"PATH": "/usr/bin:/bin", "GARRISON_BIN": shim, "PYTHONPATH": str(REPO)}
    fin = subprocess.run(
        [
            str(tmp_path / "bp" / "bin" / "finalize"),
            str(app),
            str(tmp_path),
            str(tmp_path / "deps"),
            "0",
            str(tmp_path / "prof"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    # default policy: no DB bundled -> the DB-age rule fails staging, and says so
    assert fin.returncode == 1 and "no vulnerability database was used" in fin.stdout
    tools = tmp_path / "tools"  # a PATH with a shell but no garrison and no python
    tools.mkdir()
    for t in ("bash", "dirname"):
        (tools / t).symlink_to(subprocess.check_output(["sh", "-c", f"command -v {t}"], text=True).strip())
    bare = subprocess.run(
        [str(tmp_path / "bp" / "bin" / "supply"), str(app), str(tmp_path), str(tmp_path / "deps"), "0"],
        capture_output=True,
        text=True,
        env={"PATH": str(tools)},
        timeout=60,
    )
    assert bare.returncode != 0 and "Garrison scanner not found" in bare.stderr
