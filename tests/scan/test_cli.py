"""The real `garrison` CLI in subprocesses: exit codes 0/1/2, formats, db commands, console use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scan.helpers import REPO, StubConsole, dist_info, make_droplet

GARRISON = [sys.executable, "-m", "garrison"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [*GARRISON, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("clean")
    return make_droplet(d / "clean.tgz", {**dist_info("requests", "2.32.3"), "app/main.py": "print('hi')\n"})


@pytest.fixture(scope="module")
def vulnerable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("vuln")
    return make_droplet(d / "vuln.tgz", {**dist_info("Werkzeug", "2.2.2"), "app/main.py": "print('hi')\n"})


def test_db_import_and_status(tmp_path: Path) -> None:
    src = tmp_path / "osv"
    src.mkdir()
    (src / "A.json").write_text(
        json.dumps(
            {"id": "A", "affected": [{"package": {"ecosystem": "npm", "name": "x"}, "versions": ["1.0.0"]}]}
        )
    )
    (src / "bad.json").write_text("{")
    r = run("db", "import", str(src), "--db", str(tmp_path / "db"))
    assert r.returncode == 2 and "imported 1 advisories" in r.stdout and "bad.json" in r.stderr
    r = run("db", "status", "--db", str(tmp_path / "db"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["by_ecosystem"] == {"npm": 1}
    r = run("db", "status", "--db", str(tmp_path / "nope"))
    assert r.returncode == 2 and "garrison db import" in r.stderr


def test_scan_exit_codes_and_formats(
    clean: Path, vulnerable: Path, advisory_db: Path, tmp_path: Path
) -> None:
    r = run("scan", str(clean), "--db", str(advisory_db))
    assert r.returncode == 0, r.stderr
    assert "verdict: PASS" in r.stdout
    policy = tmp_path / "policy.yaml"
    policy.write_text("thresholds:\n  high: 0\nmax_db_age_days: 30\n")
    r = run("scan", str(vulnerable), "--db", str(advisory_db), "--policy", str(policy), "-f", "json")
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert rep["verdict"] == "fail" and any("PYSEC-2023-221" in x for x in rep["reasons"])
    out = tmp_path / "r.sarif"
    r = run(
        "scan",
        str(vulnerable),
        "--db",
        str(advisory_db),
        "-f",
        "sarif",
        "-o",
        str(out),
        "--policy",
        str(policy),
    )
    assert r.returncode == 1 and json.loads(out.read_text())["version"] == "2.1.0"
    r = run("scan", str(clean), "--db", str(advisory_db), "-f", "cyclonedx")
    assert r.returncode == 0 and json.loads(r.stdout)["specVersion"] == "1.6"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "/nonexistent/droplet.tgz", "--no-db"], "no such file"),
        (["scan", "{clean}", "--db", "/nonexistent-db"], "no vulnerability database"),
        (["scan", "{clean}", "--no-db", "--policy", "{badpolicy}"], "max_db_age_days"),
        (["scan", "{clean}", "--no-db", "--hashes", "{badhashes}"], "not a SHA-256"),
        (["scan", "{clean}", "--no-db", "--yara", "{badyara}"], "do not compile"),
        (["scan", "{corrupt}", "--no-db"], "corrupt"),
    ],
)
def test_scan_errors_exit_2(args: list[str], message: str, clean: Path, tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('{"max_db_age_days": "soon"}')
    (tmp_path / "h.txt").write_text("deadbeef  short\n")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "bad.yar").write_text("rule { nope")
    (tmp_path / "c.tgz").write_bytes(clean.read_bytes()[:-40])
    fill = {
        "clean": str(clean),
        "badpolicy": str(tmp_path / "p.json"),
        "badhashes": str(tmp_path / "h.txt"),
        "badyara": str(tmp_path / "y"),
        "corrupt": str(tmp_path / "c.tgz"),
    }
    r = run(*[a.format(**fill) for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr


def test_policy_from_console_and_report_to(vulnerable: Path, advisory_db: Path) -> None:
    with StubConsole(policy={"name": "strict", "thresholds": {"high": 0}}) as console:
        r = run(
            "scan",
            str(vulnerable),
            "--db",
            str(advisory_db),
            "--console",
            console.url,
            "--token",
            "tok",
            "--report-to",
            console.url,
            "-f",
            "json",
        )
        assert r.returncode == 1, r.stderr
        assert len(console.reports) == 1 and console.reports[0]["verdict"] == "fail"
        r = run(
            "scan", str(vulnerable), "--db", str(advisory_db), "--console", console.url, "--token", "wrong"
        )
        assert r.returncode == 2 and "401" in r.stderr
    r = run("scan", str(vulnerable), "--no-db", "--console", "http://127.0.0.1:9", "--token", "t")
    assert r.returncode == 2 and "unreachable" in r.stderr
