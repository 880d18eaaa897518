"""The full defender on both data planes: exec and fork answered by the native loop when no process
control can object (the forensic exec line still written), handed to Python when one can."""

from __future__ import annotations

import errno
import json
import socket

import pytest

from garrison.defender.dataplane import native_available, tables
from garrison.policy.model import Rule
from tests.defender.helpers import Sandbox, rule, unpriv_python

PLANES = ["native", "python"] if native_available()[0] else ["python"]


def _exec_lines(sandbox: Sandbox) -> list[dict]:
    out = []
    for f in sorted(sandbox.data.glob("garrison-forensics*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec.get("kind") == "exec":
                    out.append(rec)
    return out


@pytest.mark.parametrize("dataplane", PLANES)
def test_allow_all_execs_are_answered_and_recorded(sandbox: Sandbox, mode: str, dataplane: str) -> None:
    r = sandbox.run(
        rule(),
        ["/bin/sh", "-c", "/bin/true first; /bin/echo second; exit 3"],
        garden=mode == "garden",
        env={"DEFENDER_DATAPLANE": dataplane},
    )
    assert r.returncode == 3, r.stderr
    assert r.stdout.strip() == "second"
    lines = _exec_lines(sandbox)
    argvs = [ln["argv"] for ln in lines]
    assert ["/bin/true", "first"] in argvs and ["/bin/echo", "second"] in argvs, lines
    assert all(ln["verdict"] == "allow" for ln in lines)


@pytest.mark.parametrize("dataplane", PLANES)
def test_deny_list_is_still_decided_with_the_python_controls(
    sandbox: Sandbox, mode: str, dataplane: str
) -> None:
    pol = rule(processes={"effect": "prevent", "deny": ["/usr/bin/id"]})
    r = sandbox.run(
        pol,
        ["/bin/sh", "-c", "/usr/bin/id -u || echo refused"],
        garden=mode == "garden",
        env={"DEFENDER_DATAPLANE": dataplane},
    )
    assert "refused" in r.stdout, (r.stdout, r.stderr)
    hits = [a for a in r.audits if a["control"] == "processes.deny"]
    assert hits and hits[0]["effect"] == "prevent"


def _rule(**controls: object) -> Rule:
    return Rule.model_validate({"name": "r", **controls})


def test_process_flags_follow_the_rule() -> None:
    free = tables.F_EXEC_FREE | tables.F_FORK_FREE
    assert tables.process_flags(None) == free
    assert tables.process_flags(_rule()) == free
    assert tables.process_flags(_rule(processes={"effect": "disable", "deny": ["sh"]})) == free
    assert tables.process_flags(_rule(processes={"deny": ["sh"]})) == tables.F_FORK_FREE
    assert tables.process_flags(_rule(processes={"drift_prevention": True})) == tables.F_FORK_FREE
    guard = {"fork_bomb_guard": {"max_forks_per_s": 50, "max_procs": 100}}
    assert tables.process_flags(_rule(processes=guard)) == tables.F_EXEC_FREE


LANDLOCK_APP = """
import socket, sys
for port in sys.argv[1:]:
    s = socket.socket()
    print(port, s.connect_ex(("127.0.0.1", int(port))))
"""


def _listen() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def test_landlock_tcp_ports_enforce_a_port_only_rule_without_trapping_connect(
    sandbox: Sandbox, mode: str
) -> None:
    ok, other = _listen(), _listen()
    try:
        okp, otherp = ok.getsockname()[1], other.getsockname()[1]
        py, _ = unpriv_python()
        sandbox.write("app.py", LANDLOCK_APP, mode=0o644)
        allow = [{"cidr": "*", "ports": str(okp), "protocol": "tcp"}]
        pol = rule(network={"effect": "prevent", "outbound": {"allow": allow}})
        r = sandbox.run(
            pol,
            [py, "app.py", str(okp), str(otherp)],
            garden=mode == "garden",
            env={"DEFENDER_LANDLOCK_PORTS": "1"},
        )
    finally:
        ok.close()
        other.close()
    assert r.returncode == 0, r.stderr
    res = dict(line.split() for line in r.stdout.split("\n") if line.strip())
    [start] = [a for a in r.audits if a["control"] == "startup"]
    notes = " ".join(start["extra"]["mechanisms"] + start["extra"]["weaker"])
    if mode == "garden":  # Landlock blocked: the trapped path decides (and audits)
        # (without the socket type, the CONTINUE fallback applies the stricter of the TCP and UDP
        # verdicts, so the TCP-only allow-list refuses the allowed port too: its documented limit)
        assert "Landlock TCP ports unavailable" in notes
        assert res[str(otherp)] == str(errno.ECONNREFUSED)
        assert otherp in [a["dest_port"] for a in r.audits if a["type"] == "network"]
    else:
        assert res[str(okp)] == "0"
        assert "Landlock TCP connect ports (1 allowed" in notes
        assert res[str(otherp)] == str(errno.EACCES)  # the kernel refused it: no notification, no audit


def test_landlock_ports_only_for_rules_that_restrict_nothing_else() -> None:
    tcp = {"cidr": "*", "ports": "443,8000-8002", "protocol": "tcp"}
    assert tables.landlock_ports(_rule(network={"effect": "prevent", "outbound": {"allow": [tcp]}})) == [
        443, 8000, 8001, 8002,
    ]  # fmt: skip
    for net in (
        {"effect": "alert", "outbound": {"allow": [tcp]}},  # alert must let the call happen and audit it
        {"effect": "prevent", "outbound": {"allow": ["*:443"]}},  # protocol any: UDP too
        {"effect": "prevent", "outbound": {"allow": [{**tcp, "cidr": "10.0.0.0/8"}]}},
        {"effect": "prevent", "outbound": {"allow": [tcp], "deny": ["10.0.0.1"]}},
        {"effect": "prevent", "outbound": {"allow": [tcp]}, "bad_reputation_ips": ["10.0.0.1"]},
        {"effect": "prevent", "outbound": {"allow": [{**tcp, "ports": "1-65535"}]}},
    ):
        assert tables.landlock_ports(_rule(network=net)) is None, net
    dns = {"effect": "prevent", "deny": ["*.evil.test"]}
    assert (
        tables.landlock_ports(_rule(network={"effect": "prevent", "outbound": {"allow": [tcp]}}, dns=dns))
        is None
    )
