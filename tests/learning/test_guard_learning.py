"""Learning through the real network guard on both data planes, in the suite's network namespace:
what the recorder counts (destinations with protocol and the DNS name that resolved them, names,
listening ports), and once the learned rule is in force, a new listening port is an anomaly."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from garrison.defender.context import DefenderContext
from garrison.defender.forensics import ForensicRing
from garrison.defender.net import TRAP_ONLY_IF_ARG_NONZERO, NetworkGuard
from garrison.defender.net.standalone import Supervised
from garrison.defender.profile import ProfileRecorder
from garrison.kernel.features import probe
from garrison.policy.audit import AuditEvent
from garrison.policy.model import RuntimePolicy
from garrison.policy.scope import Identity
from tests.defender.net.conftest import APP_PYTHON, HOST4, OTHER4, DnsServer, in_netns
from tests.defender.net.servers import TcpServer, UdpServer

pytestmark = pytest.mark.slow

APP = """
import socket, sys
tcp, udp, listen = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
host = socket.getaddrinfo("svc.test", tcp, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
for _ in range(3):
    s = socket.create_connection((host, tcp)); s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"x", (sys.argv[4], udp))
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("127.0.0.1", listen)); l.listen()
print("ok", host)
"""


@pytest.fixture(params=["python", "native"])
def plane(request: pytest.FixtureRequest) -> str:
    if request.param == "native":
        from garrison.defender.dataplane import native_available

        ok, why = native_available()
        if not ok:
            pytest.skip(why)
    return str(request.param)


def _run(ctx: DefenderContext, upstream: tuple[str, int], argv: list[str], plane: str) -> str:
    guard = NetworkGuard(ctx, upstreams=[upstream])
    if ctx.profile is not None:
        ctx.profile.names_for = guard.pins.names_for
    guard.start()
    try:
        sup = Supervised(argv, guard.handlers, ctx, nonzero_arg=TRAP_ONLY_IF_ARG_NONZERO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, dataplane=plane, guard=guard)  # fmt: skip
        rc, out, err = sup.communicate(timeout=120)
        assert rc == 0, err
        return str(out)
    finally:
        guard.stop()


def test_learn_then_a_new_listening_port_is_an_anomaly(netns: str, plane: str) -> None:
    def scenario() -> None:
        tcp, udp = TcpServer(HOST4), UdpServer(OTHER4)
        dns = DnsServer({"svc.test": [HOST4]})
        audits: list[AuditEvent] = []
        ctx = DefenderContext(
            Identity(app_name="shop"),
            "d1",
            probe(),
            ForensicRing(Path(tempfile.mkdtemp()), name="f"),
            [audits.append],
        )
        ctx.profile = ProfileRecorder()
        learn = {"name": "learned", "processes": {"effect": "learn"}, "network": {"effect": "learn"},
                 "dns": {"effect": "learn"}}  # fmt: skip
        ctx.set_policy(RuntimePolicy(rules=[learn]))
        try:
            argv = [APP_PYTHON, "-c", APP, str(tcp.port), str(udp.port), "18081", OTHER4]
            assert _run(ctx, dns.address, argv, plane).startswith("ok " + HOST4)
            (rep,), _ = ctx.profile.take(full=True)
            dests = {(d.ip, d.port, d.protocol): d for d in rep.destinations}
            assert dests[(HOST4, tcp.port, "tcp")].count == 3
            assert dests[(HOST4, tcp.port, "tcp")].names == ["svc.test"]
            assert (OTHER4, udp.port, "udp") in dests
            assert "svc.test" in {n.name for n in rep.dns}
            assert (18081, "tcp") in {(lp.port, lp.protocol) for lp in rep.listening}
            assert not [a for a in audits if a.type != "defender"]  # learning: nothing to alert

            accepted = {"name": "learned", "network": {"effect": "alert", "listening": {"allow": ["18081"]},
                        "outbound": {"allow": [f"{HOST4}:{tcp.port}", f"{OTHER4}:{udp.port}"]}},
                        "dns": {"effect": "alert", "allow": ["svc.test"]}}  # fmt: skip
            ctx.set_policy(RuntimePolicy(rules=[accepted]))
            argv[5] = "18082"  # a listening port the profile never saw
            _run(ctx, dns.address, argv, plane)
            listens = [a for a in audits if a.control == "network.listening.allow"]
            assert listens and listens[0].effect == "alert" and listens[0].dest_port == 18082
            assert not [a for a in audits if a.control in ("network.outbound.allow", "dns.allow")]
        finally:
            ctx.forensics.close()
            dns.close()
            tcp.close()
            udp.close()

    in_netns(netns, scenario)
