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


def _lines(sandbox: Sandbox, kind: str) -> list[dict]:
    out = []
    for f in sorted(sandbox.data.glob("garrison-forensics*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec.get("kind") == kind:
                    out.append(rec)
    return out


def _exec_lines(sandbox: Sandbox) -> list[dict]:
    return _lines(sandbox, "exec")


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


NET_APP = """
import socket, sys
tcp4, tcp6, udp = (int(p) for p in sys.argv[1:4])
for fam, host, port in ((socket.AF_INET, "127.0.0.1", tcp4), (socket.AF_INET6, "::1", tcp6)):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.connect((host, port))
    s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"x", ("127.0.0.1", udp))
u.sendmsg([b"y"], [], 0, ("127.0.0.1", udp))
print("done")
"""


def test_allowed_destinations_leave_the_same_forensic_lines_on_both_planes(sandbox: Sandbox) -> None:
    """The native loop formats its own "net" lines (no Python object per allowed connect): they are
    the lines the network guard writes, key for key."""
    t4 = _listen()
    t6 = socket.socket(socket.AF_INET6)
    t6.bind(("::1", 0))
    t6.listen(16)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    py, _ = unpriv_python()
    sandbox.write("net.py", NET_APP, mode=0o644)
    ports = [str(x.getsockname()[1]) for x in (t4, t6, u)]
    pol = rule(network={"effect": "prevent", "outbound": {"deny": ["10.0.0.0/8"]}})
    seen = {}
    try:
        for plane in PLANES:
            for f in sandbox.data.glob("garrison-forensics*.jsonl"):
                f.unlink()
            r = sandbox.run(pol, [py, "net.py", *ports], env={"DEFENDER_DATAPLANE": plane})
            assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr
            lines = _lines(sandbox, "net")
            assert all(isinstance(ln.pop("t"), float) for ln in lines)
            seen[plane] = sorted(
                (ln["dest_ip"], ln["dest_port"], ln["protocol"], ln["names"]) for ln in lines
            )
            assert all(
                set(ln) == {"kind", "pid", "dest_ip", "dest_port", "protocol", "names"} for ln in lines
            )
    finally:
        for x in (t4, t6, u):
            x.close()
    expect = sorted([("127.0.0.1", int(ports[0]), "tcp", []), ("::1", int(ports[1]), "tcp", []),
                     ("127.0.0.1", int(ports[2]), "udp", []), ("127.0.0.1", int(ports[2]), "udp", [])])  # fmt: skip
    for plane in PLANES:
        assert seen[plane] == expect, (plane, seen[plane])
