"""CIS benchmark with the real OpenSCAP and SCAP Security Guide content (Debian packages)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from garrison.host.cis import datastream_for, run_cis
from garrison.host.posture import CellPolicy, CisThresholds, PostureStore, judge

pytestmark = pytest.mark.skipif(shutil.which("oscap") is None, reason="openscap-scanner not installed")
GARRISON = [sys.executable, "-m", "garrison"]


def test_live_debian_host_is_said_not_applicable() -> None:
    if datastream_for(Path("/")) is not None:
        pytest.skip("this host is an Ubuntu release the content covers")
    report = run_cis(Path("/"))
    assert not report.applicable
    assert "no CIS content applies" in report.reason and "nothing was evaluated" in report.reason
    assert report.score is None and report.rules == []


def test_rootfs_evaluated_rule_flip_policy_and_drift(tmp_path: Path, jammy: Path) -> None:
    root = jammy
    good = run_cis(root)
    assert good.applicable and good.score is not None and 0 < good.score < 100
    assert good.benchmark.endswith("UBUNTU_22-04")
    by_id = {r.id.rsplit("_rule_", 1)[-1]: r for r in good.rules}
    assert by_id["file_permissions_etc_passwd"].result == "pass"
    failing = good.failed()
    assert failing and all(r.severity in ("low", "medium", "high", "unknown") for r in failing)
    assert any(r.remediation for r in failing), "failed rules carry remediation text"

    policy = CellPolicy(cis=CisThresholds(required_rules=["file_permissions_etc_passwd"], min_score=10))
    assert judge(policy, good, None) == ("pass", [])

    os.chmod(root / "etc/passwd", 0o666)  # world-writable passwd: the rule must now fail
    bad = run_cis(root)
    bad_by_id = {r.id.rsplit("_rule_", 1)[-1]: r for r in bad.rules}
    assert bad_by_id["file_permissions_etc_passwd"].result == "fail"
    assert bad.score is not None and bad.score < good.score
    verdict, reasons = judge(policy, bad, None)
    assert verdict == "fail" and "file_permissions_etc_passwd" in reasons[0]

    store = PostureStore(tmp_path / "state/posture.db")
    store.add_cis(good)
    assert store.record_verdict("pass", [], "cell-1") is None
    store.add_cis(bad)
    drift = store.record_verdict(verdict, reasons, "cell-1")
    assert drift is not None and drift.action == "drift" and drift.severity == "high"
    trend = store.cis_trend()
    assert [t["score"] for t in trend] == [good.score, bad.score]
    assert "file_permissions_etc_passwd" in trend[-1]["failed"]
    assert oct((tmp_path / "state/posture.db").stat().st_mode & 0o777) == "0o600"


def test_cli_json_and_exit_code(tmp_path: Path, jammy: Path) -> None:
    root = jammy
    os.chmod(root / "etc/passwd", 0o666)
    policy = tmp_path / "cell.yml"
    policy.write_text("cis:\n  required_rules: [file_permissions_etc_passwd]\n")
    proc = subprocess.run(
        [*GARRISON, "host", "cis", "--root", str(root), "--policy", str(policy), "--state", str(tmp_path / "s"),
         "--json"], capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["verdict"] == "fail" and doc["applicable"] and doc["counts"]["fail"] > 0


def test_cli_bad_policy_is_a_clear_error(tmp_path: Path) -> None:
    policy = tmp_path / "cell.yml"
    policy.write_text("cis:\n  min_score: lots\n")
    proc = subprocess.run([*GARRISON, "host", "cis", "--policy", str(policy), "--state", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "cell policy" in proc.stderr
