"""The console's Hosts section with a real console: CIS runs, host scans and events from cells,
the cell policy judged in the console, drift alerts, filters, CSV; and the host agent end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from garrison.host.cis import run_cis
from garrison.host.model import CisReport, HostEvent
from garrison.scan.scanner import ScanOptions, scan
from tests.host.conftest import jammy_root

GARRISON = [sys.executable, "-m", "garrison"]
needs_oscap = pytest.mark.skipif(shutil.which("oscap") is None, reason="openscap-scanner not installed")


@pytest.fixture(scope="module")
def cis_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[CisReport, CisReport]:
    """A passing and a failing (world-writable /etc/passwd) CIS run of the same root filesystem."""
    if shutil.which("oscap") is None:
        pytest.skip("openscap-scanner not installed")
    root = jammy_root(tmp_path_factory.mktemp("cis"))
    good = run_cis(root, host="cell-a")
    os.chmod(root / "etc/passwd", 0o666)
    return good, run_cis(root, host="cell-a")


def _name() -> str:
    return "cell-" + uuid.uuid4().hex[:8]


@needs_oscap
def test_cis_reports_policy_verdict_drift_and_trend(console: Any, cis_pair: tuple[CisReport, CisReport]) -> None:
    good, bad = cis_pair
    host = _name()
    with console.api() as api:
        policy = {"name": "cells", "cis": {"required_rules": ["file_permissions_etc_passwd"], "min_score": 20}}
        assert api.put("/hosts/policy", json=policy).status_code == 200
        r = api.post(f"/hosts/{host}/cis", content=good.model_dump_json(), headers={"content-type": "application/json"})
        assert r.status_code == 201 and r.json() == {"verdict": "pass", "reasons": []}
        r = api.post(f"/hosts/{host}/cis", content=bad.model_dump_json(), headers={"content-type": "application/json"})
        assert r.json()["verdict"] == "fail" and "file_permissions_etc_passwd" in r.json()["reasons"][0]
        detail = api.get(f"/hosts/{host}").json()
        assert detail["posture"]["verdict"] == "fail"
        assert [t["score"] for t in detail["cis_trend"]] == [good.score, bad.score]
        drift = api.get(f"/hosts/{host}/events", params={"type": "compliance"}).json()
        assert [e["action"] for e in drift] == ["drift"]
        latest = api.get(f"/hosts/{host}/cis/latest").json()
        rule = next(x for x in latest["rules"] if x["id"].endswith("file_permissions_etc_passwd"))
        assert rule["result"] == "fail" and rule["remediation"] and rule["severity"] == "medium"
        failing = {h["name"] for h in api.get("/hosts", params={"verdict": "fail"}).json()}
        assert host in failing
        csv = api.get("/hosts/export.csv", params={"q": host}).text.splitlines()
        assert csv[0].startswith("host,verdict,cis_profile,cis_score") and csv[1].startswith(f"{host},fail,")
        mgmt = api.get("/audits/mgmt").json()
        assert any(m.get("action") == "policy.cell.update" for m in (mgmt if isinstance(mgmt, list) else mgmt["items"]))
        api.put("/hosts/policy", json={})


def test_events_dedup_counters_and_roles(console: Any) -> None:
    host = _name()
    login = HostEvent(host=host, type="access", action="login", severity="low", user="bosh_x1", source="10.0.0.9")
    fail = HostEvent(host=host, type="access", action="login_failed", user="root", source="203.0.113.4")
    change = HostEvent(host=host, type="fim", action="modified", path="/usr/bin/sudo", severity="high", pid=42)
    body = {"events": [e.model_dump(mode="json") for e in (login, fail, change)]}
    with console.api() as api:
        assert api.post(f"/hosts/{host}/events", json=body).json() == {"received": 3, "new": 3}
        assert api.post(f"/hosts/{host}/events", json=body).json() == {"received": 3, "new": 0}
        posture = api.get(f"/hosts/{host}").json()["posture"]
        assert posture["counters"] == {"access_events": 1, "login_failures": 1, "fim_changes": 1}
        assert posture["last_login"]["user"] == "bosh_x1"
        assert [e["path"] for e in api.get(f"/hosts/{host}/events", params={"type": "fim"}).json()] == ["/usr/bin/sudo"]
        assert api.get("/hosts/no-such-cell").status_code == 404
        assert api.post("/hosts/bad name!/events", json=body).status_code in (404, 422)
        too_many = {"events": [login.model_dump(mode="json")] * 1001}
        assert api.post(f"/hosts/{host}/events", json=too_many).status_code == 422
    console.create_user("auditor-" + host, "Secret-pass-123", "auditor")
    with console.api(user="auditor-" + host, password="Secret-pass-123") as ro:
        assert ro.get(f"/hosts/{host}").status_code == 200
        assert ro.post(f"/hosts/{host}/events", json=body).status_code == 403
        assert ro.put("/hosts/policy", json={}).status_code == 403


def test_host_scan_report(console: Any, tmp_path: Path) -> None:
    root = tmp_path / "host"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: openssl\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.0.2-0ubuntu1.10\n"
        "Source: openssl\n\n"
    )
    keys = root / "var/vcap/jobs/rep/config"
    keys.mkdir(parents=True)
    subprocess.run(["openssl", "genrsa", "-out", str(keys / "rep.key"), "2048"], check=True, capture_output=True)
    (root / "etc").mkdir()
    (root / "etc/app.conf").write_text("-----BEGIN CERTIFICATE-----\nnot a key\n")
    report = scan(root, ScanOptions(host=True, secrets=True))  # on a host: private keys
    assert [(s.path, s.kind) for s in report.secrets] == [("var/vcap/jobs/rep/config/rep.key", "Private Key")]
    host = _name()
    with console.api() as api:
        r = api.post(f"/hosts/{host}/scan", content=report.model_dump_json(), headers={"content-type": "application/json"})
        assert r.status_code == 201, r.text
        posture = api.get(f"/hosts/{host}").json()["posture"]
        assert posture["scan"]["packages"] >= 1 and posture["scan"]["secrets"] == 1


def test_agent_reports_live_file_change_with_pid_and_cis_state(console: Any, tmp_path: Path) -> None:
    watched = tmp_path / "etc"
    watched.mkdir()
    (watched / "job.conf").write_text("port=8080\n")
    with console.api() as api:
        token = api.post("/tokens", json={"name": "cell-agent"}).json()["token"]
    host = _name()
    agent = subprocess.Popen(
        [*GARRISON, "host", "agent", "--console", console.url, "--token", token, "--cacert", str(console.ca_path),
         "--name", host, "--state", str(tmp_path / "state"), "--path", str(watched), "--no-scan",
         "--cis-every", "0", "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        with console.api() as api:
            deadline = time.monotonic() + 45
            while api.get(f"/hosts/{host}").status_code != 200:
                assert time.monotonic() < deadline and agent.poll() is None, "agent never reported"
                time.sleep(0.3)
            time.sleep(1.0)  # the live monitor is up once the host exists
            writer = subprocess.Popen(["/bin/sh", "-c", f"echo port=31337 > {watched}/job.conf; sleep 2"])
            events: list[dict[str, Any]] = []
            while not events:
                assert time.monotonic() < deadline, "no FIM event reached the console"
                events = api.get(f"/hosts/{host}/events", params={"type": "fim"}).json()
                time.sleep(0.3)
            writer.wait()
            ev = events[0]
            assert ev["path"] == str(watched / "job.conf") and ev["action"] == "modified"
            if ev["pid"] is not None:  # fanotify: the writer is known
                assert ev["pid"] == writer.pid
            cis = api.get(f"/hosts/{host}").json()["posture"].get("cis")
            deadline = time.monotonic() + 60
            while cis is None:
                assert time.monotonic() < deadline, "no CIS state reported"
                time.sleep(0.5)
                cis = api.get(f"/hosts/{host}").json()["posture"].get("cis")
            if shutil.which("oscap"):
                assert cis["applicable"] or "no CIS content applies" in cis["reason"]
    finally:
        agent.terminate()
        out, _ = agent.communicate(timeout=30)
    assert "garrison host agent on" in out
