"""End to end through `garrison defender app-embedded` (the supervisor engineer's launcher), in the
test namespace: the guard plugged into the real supervisor, audits read from DATA_FOLDER."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import APP_PYTHON, HOST4
from .servers import TcpServer
from .test_toctou import RACE, _settle

pytestmark = pytest.mark.slow
GARRISON = str(Path(sys.executable).parent / "garrison")


@pytest.fixture
def defender(netns, tmp_path, dataplane):
    pytest.importorskip("garrison.defender.launch", reason="the supervisor's launcher is not in this tree")
    if not os.path.exists(GARRISON):
        pytest.skip("garrison console script not installed in the venv")
    tmp_path.chmod(0o755)

    def run(
        rule: dict, *app: str, timeout: float = 300
    ) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
        policy = tmp_path / "policy.json"
        policy.write_text(json.dumps({"rules": [{"name": "e2e", **rule}]}))
        p = subprocess.run(
            ["ip", "netns", "exec", os.path.basename(netns), GARRISON, "defender", "app-embedded",
             "--policy", str(policy), *app],
            capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "DATA_FOLDER": str(tmp_path), "DEFENDER_DATAPLANE": dataplane},
        )  # fmt: skip
        log = tmp_path / "garrison-audit.jsonl"
        audits = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
        log.unlink(missing_ok=True)
        return p, [a for a in audits if a["type"] != "defender"]

    return run


E2E_APP = """
import socket, sys
host, ok, bad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for p in (ok, bad):
    s = socket.socket(); print(p, s.connect_ex((host, p)))
try: socket.getaddrinfo("x.evil.test", 80); print("dns resolved")
except socket.gaierror as e: print("dns", e.errno)
"""


def test_denied_connect_and_dns_through_the_defender(defender, ns_call):
    ok, bad = ns_call(lambda: TcpServer(HOST4)), ns_call(lambda: TcpServer(HOST4))
    rule = {
        "network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{bad.port}"]}},
        "dns": {"effect": "prevent", "deny": ["*.evil.test"]},
    }
    p, audits = defender(rule, APP_PYTHON, "-c", E2E_APP, HOST4, str(ok.port), str(bad.port))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:3] == [f"{ok.port} 0", f"{bad.port} 111", "dns -2"], p.stdout
    assert "network checks: emulated (TOCTOU-safe)" in p.stderr
    assert {(a["type"], a["control"], a["effect"]) for a in audits} == {
        ("network", "network.outbound.deny", "prevent"),
        ("dns", "dns.deny", "prevent"),
    }
    net = next(a for a in audits if a["type"] == "network")
    assert net["dest_port"] == bad.port and net["rule"] == "e2e" and net["exe"].startswith("/usr/bin/python3")


def test_toctou_race_through_the_defender(defender, ns_call):
    ok, bad = ns_call(lambda: TcpServer(HOST4)), ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{bad.port}"]}}}
    p, _ = defender(rule, APP_PYTHON, "-c", RACE, HOST4, str(ok.port), str(bad.port), "2000")
    connected, refused = map(int, p.stdout.split())
    assert connected + refused == 2000 and refused > 0, p.stderr
    _settle(ok, bad)
    assert bad.accepted == 0 and ok.accepted == connected


SWEEP_AND_PIN = """
import socket, sys
host, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
res = []
for p in ports:
    s = socket.socket(); res.append(s.connect_ex((host, p))); s.close()
print(" ".join(map(str, res)))
"""


def test_port_scan_through_the_defender(defender, ns_call):
    from .servers import free_port

    ports = sorted({ns_call(lambda: free_port(HOST4)) for _ in range(110)})[:100]
    rule = {"network": {"effect": "alert", "port_scan": {"threshold": 50, "window_s": 60}}}
    p, audits = defender(rule, APP_PYTHON, "-c", SWEEP_AND_PIN, HOST4, *map(str, ports))
    assert p.returncode == 0 and len(p.stdout.split()) == 100, p.stderr
    scans = [a for a in audits if a["type"] == "port_scan"]
    assert len(scans) == 1 and scans[0]["effect"] == "alert" and scans[0]["severity"] == "high"
