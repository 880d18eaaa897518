"""`garrison cnaf inspect` and `garrison cnaf proxy` as a user runs them."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from garrison.cli.main import app
from tests.cnaf.backend import Backend

runner = CliRunner()


def test_inspect_reports_findings_and_exit_code(tmp_path: Path) -> None:
    r = runner.invoke(app, ["cnaf", "inspect", "/x?file=../../../etc/passwd"])
    assert r.exit_code == 1
    assert json.loads(r.stdout)[0]["attack"] == "lfi"
    r = runner.invoke(app, ["cnaf", "inspect", "/people?name=O%27Brien"])
    assert r.exit_code == 0 and json.loads(r.stdout) == []


def test_bad_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("effects:\n  sqlinjection: prevent\n")
    r = runner.invoke(app, ["cnaf", "proxy", "--upstream", "127.0.0.1:1", "--policy", str(bad)])
    assert r.exit_code == 2
    assert "effects" in r.output and "unknown attack class" in r.output
    r = runner.invoke(app, ["cnaf", "proxy", "--upstream", "nonsense", "--policy", str(bad)])
    assert r.exit_code == 2 and "HOST:PORT" in r.output


def test_proxy_command_end_to_end(tmp_path: Path, backend: Backend) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps({"rules": [{"name": "web", "cnaf": {"effects": {"sqli": "prevent", "xss": "alert"}}}]})
    )
    audit = tmp_path / "audit.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "garrison",
            "cnaf",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            f"127.0.0.1:{backend.port}",
            "--policy",
            str(policy),
            "--audit-log",
            str(audit),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert m, line
        port = int(m.group(1))
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/items?id=1%20OR%201=1")
        r = c.getresponse()
        r.read()
        assert r.status == 403
        c.request("GET", "/q?x=%3Cscript%3E")
        r = c.getresponse()
        r.read()
        assert r.status == 200
        c.close()
        for _ in range(100):
            if audit.exists() and len(audit.read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        events = [json.loads(x) for x in audit.read_text().splitlines()]
        assert [(e["control"], e["effect"]) for e in events] == [("sqli", "prevent"), ("xss", "alert")]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
