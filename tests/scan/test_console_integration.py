"""Against a real console: policy from the console, report upload, verdict lookup by the gate."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from garrison.scan.console import ConsoleConfig, fetch_policy
from garrison.scan.gate import check_droplet, file_digest
from tests.scan.helpers import REPO, dist_info, make_droplet

pytestmark = pytest.mark.slow


def test_scan_report_and_gate_with_real_console(console: Any, advisory_db: Path, tmp_path: Path) -> None:
    with console.api() as api:
        r = api.put(
            "/policies/assurance",
            json={
                "name": "it",
                "thresholds": {"high": 0},
                "max_db_age_days": 30,
                "runtime_effect": "prevent",
            },
        )
        assert r.status_code == 200, r.text
    cfg = ConsoleConfig(
        url=console.url,
        user=console.admin_user,
        password=console.admin_password,
        ca_cert=str(console.ca_path),
    )
    assert fetch_policy(cfg).runtime_effect == "prevent"
    droplet = make_droplet(tmp_path / "d.tgz", {**dist_info("Werkzeug", "2.2.2"), "app/x.py": "print(1)\n"})
    env = {**os.environ, "GARRISON_PASSWORD": console.admin_password}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "garrison",
            "scan",
            str(droplet),
            "--db",
            str(advisory_db),
            "--console",
            console.url,
            "--report-to",
            console.url,
            "--user",
            console.admin_user,
            "--ca-cert",
            str(console.ca_path),
            "--app",
            "it-shop",
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env=env,
    )
    assert run.returncode == 1, run.stderr
    digest = file_digest(droplet)
    assert digest == "sha256:" + hashlib.sha256(droplet.read_bytes()).hexdigest()
    with console.api() as api:
        rows = api.get("/scans", params={"digest": digest}).json()
        assert rows and rows[0]["verdict"] == "fail" and rows[0]["app_name"] == "it-shop"
    d = check_droplet(cfg, digest, "it-shop")
    assert not d.allow and d.verdict == "fail" and "PYSEC-2023-221" in d.reason
    unknown = check_droplet(cfg, "sha256:" + "0" * 64)
    assert unknown.allow and unknown.verdict == "unknown"


def test_buildpack_staging_reports_to_real_console(console: Any, advisory_db: Path, tmp_path: Path) -> None:
    """cf push path: staging scan -> console report -> defender gate reads the digest from profile.d."""
    from tests.scan.helpers import write_tree

    with console.api() as api:
        r = api.put("/policies/assurance", json={"name": "bp-it", "runtime_effect": "prevent"})
        assert r.status_code == 200, r.text
    bp = tmp_path / "bp"
    exp = subprocess.run(
        [
            sys.executable,
            "-m",
            "garrison",
            "buildpack",
            "export",
            str(bp),
            "--db",
            str(advisory_db),
            "--console",
            console.url,
            "--ca-cert",
            str(console.ca_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert exp.returncode == 0, exp.stderr
    shim = tmp_path / "garrison-shim"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m garrison "$@"\n')
    shim.chmod(0o755)
    app = write_tree(
        tmp_path / "app",
        {
            "main.py": "print(1)\n",
            "tls/key.pem": (
                "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
                "-----END PRIVATE KEY-----\n"
            ),
        },
    )
    deps = tmp_path / "deps"
    (deps / "0").mkdir(parents=True)
    env = {
        "PATH": os.environ["PATH"],
        "GARRISON_BIN": str(shim),
        "PYTHONPATH": str(REPO),
        "GARRISON_USER": console.admin_user,
        "GARRISON_PASSWORD": console.admin_password,
        "VCAP_APPLICATION": '{"application_name": "bp-shop"}',
    }
    run = subprocess.run(
        [str(bp / "bin" / "supply"), str(app), str(tmp_path / "cache"), str(deps), "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"report sent to {console.url}" in run.stdout and "Private Key at tls/key.pem:1" in run.stdout
    digest = (deps / "0" / "profile.d" / "garrison.sh").read_text().splitlines()[0].split("=", 1)[1]
    cfg = ConsoleConfig(
        url=console.url,
        user=console.admin_user,
        password=console.admin_password,
        ca_cert=str(console.ca_path),
    )
    d = check_droplet(cfg, digest, "bp-shop")
    assert not d.allow and "Private Key" in d.reason
