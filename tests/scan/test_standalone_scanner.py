"""The standalone scanner binary (scripts/build-scanner) vendored into the buildpack and run by CF's
staging lifecycle in a container with no Python: the path `garrison buildpack export --binary` documents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from garrison.scan.identity import IDENTITY_FILE
from garrison.scan.vulndb.index import VulnIndex
from tests.scan.cfstaging import CfApp, stage, unpack_buildpack
from tests.scan.helpers import REPO, make_droplet, osv

pytestmark = pytest.mark.slow
BINARY = REPO / "dist" / "garrison-scanner"
ADVISORY = osv(
    "GHSA-demo-0000-0001", "flask", fixed="2.2.5", vector="CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
)


@pytest.fixture(scope="session")
def scanner_binary() -> Path:
    """scripts/build-scanner output; a no-op when the frozen sources did not change."""
    r = subprocess.run(["bash", str(REPO / "scripts" / "build-scanner")], capture_output=True, text=True)
    assert r.returncode == 0, f"scripts/build-scanner failed:\n{r.stdout}\n{r.stderr}"
    assert BINARY.is_file()
    return BINARY


def no_python_path(tmp: Path) -> str:
    """A PATH with a shell and coreutils but no python and no garrison (like a bare stack image)."""
    tools = tmp / "tools"
    tools.mkdir()
    for t in ("bash", "dirname", "env", "cat", "mkdir"):
        found = subprocess.check_output(["sh", "-c", f"command -v {t}"], text=True).strip()
        (tools / t).symlink_to(found)
    return str(tools)


def test_binary_scans_and_answers_like_garrison(scanner_binary: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    with VulnIndex(db, create=True) as ix:
        ix.import_advisories([ADVISORY], "test")
    droplet = make_droplet(tmp_path / "d.tgz", {"app/requirements.txt": "flask==2.0.0\n"})
    env = {"PATH": no_python_path(tmp_path), "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    assert (
        subprocess.run([str(scanner_binary), "--version"], capture_output=True, text=True, env=env).returncode
        == 0
    )
    r = subprocess.run(
        [str(scanner_binary), "scan", str(droplet), "--db", str(db), "-f", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 1, r.stderr  # a critical finding fails the default policy
    report = json.loads(r.stdout)
    assert [v["id"] for v in report["vulnerabilities"]] == ["GHSA-demo-0000-0001"]
    assert report["vulnerabilities"][0]["fixed_versions"] == ["2.2.5"]
    bad = subprocess.run(
        [str(scanner_binary), "scan", str(tmp_path / "missing.tgz")], capture_output=True, env=env
    )
    assert bad.returncode == 2


def test_vendored_binary_stages_without_python(scanner_binary: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    with VulnIndex(db, create=True) as ix:
        ix.import_advisories([ADVISORY], "test")
    exp = subprocess.run(
        [sys.executable, "-m", "garrison", "buildpack", "export", str(tmp_path / "bp"), "--db", str(db),
         "--binary", str(scanner_binary), "--zip"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert exp.returncode == 0, exp.stderr
    bp = unpack_buildpack(tmp_path / "bp.zip", tmp_path / "buildpacks" / "garrison")
    assert (bp / "vendor" / "garrison").stat().st_mode & 0o111
    path = no_python_path(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("print(1)\n")
    (src / "requirements.txt").write_text("flask==2.3.0\n")
    app = CfApp("bin-shop")
    ok = stage([bp], src, tmp_path / "ok", app, {"PATH": path})
    assert ok.returncode == 0, ok.output
    assert "assurance policy 'default': PASS" in ok.output
    ident = json.loads((ok.deps / "0" / IDENTITY_FILE).read_text())
    assert ident["app"]["guid"] == app.guid and ident["phase"] == "finalize"
    (src / "requirements.txt").write_text("flask==2.0.0\n")
    failed = stage([bp], src, tmp_path / "bad", app, {"PATH": path})
    assert failed.returncode == 1, failed.output
    assert "GHSA-demo-0000-0001 in flask 2.0.0" in failed.output and "staging refused" in failed.output
