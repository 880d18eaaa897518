"""DNS steered to the cell defender's resolver: every UDP/TCP packet to port 53 in the container's
network namespace is redirected (nftables) to the app-embedded defender's resolver proxy, listening
inside the container; denied names get NXDOMAIN with a `dns` audit, allowed ones are answered by the
suite's own upstream on the cell, and with a DNS allow-list connects go only to addresses an allowed
name resolved to (pinned in the kernel's set before the app sees the answer)."""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from garrison.policy.model import RuntimePolicy
from tests.cell.conftest import START_SH
from tests.defender.net.conftest import DnsServer
from tests.defender.net.servers import TcpServer

_subnets = itertools.count(60)


@pytest.fixture
def upstream() -> Iterator[DnsServer]:
    server = DnsServer({})
    yield server
    server.close()


def _policy(effect: str = "prevent", **dns: Any) -> RuntimePolicy:
    return RuntimePolicy.model_validate({"rules": [{"name": "dns-rule", "scope": {"orgs": ["acme"]},
                                                    "dns": {"effect": effect, **dns}}]})  # fmt: skip


def _lookup(c: Any, name: str, server: str, *, tcp: bool = False) -> str:
    """busybox nslookup from inside the container, asking the resolver the container was given."""
    r = c.exec("/bin/sh", "-c", f"/bin/nslookup {name} {server} 2>&1; echo rc=$?", timeout=30)
    return r.stdout


def _connect(c: Any, ip: str, port: int) -> bool:
    r = c.exec("/bin/sh", "-c", f"echo x | /bin/nc -w 3 {ip} {port}; echo rc=$?")
    return "rc=0" in r.stdout


def _started_wired(garden: Any, script: str = START_SH) -> tuple[Any, str]:
    """A started app container wired as Garden wires it: a veth pair, the default route via the cell."""
    c = garden()
    host_ip, _ = c.veth(next(_subnets))
    pid = json.loads(subprocess.run(["runc", "--root", str(c.runc_root), "state", c.id], capture_output=True,
                                    text=True, check=True).stdout)["pid"]
    subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "route", "add", "default", "via", host_ip], check=True)
    c.run_app(script)
    return c, host_ip


def _started(garden: Any, defender: Any, upstream: DnsServer, policy: RuntimePolicy) -> tuple[Any, Any, str]:
    _d, audits = defender(policy, dns_upstreams=[upstream.address])
    c, host_ip = _started_wired(garden)
    audits.wait(lambda e: e.control == "cell.container_protected" and e.extra["container"] == c.id)
    return c, audits, host_ip


def test_denied_name_nxdomain_allowed_answered_with_audits(garden: Any, defender: Any, upstream: DnsServer) -> None:
    c, audits, host_ip = _started(garden, defender, upstream, _policy(deny=["*.evil.test", "evil.test"]))
    upstream.zone.update({"good.test": [host_ip], "x.evil.test": [host_ip]})
    # the container asks the cell-side address; nothing listens on its port 53: only the steering answers
    ok = _lookup(c, "good.test", host_ip)
    assert host_ip in ok and "rc=0" in ok, ok
    bad = _lookup(c, "x.evil.test", host_ip)
    assert "NXDOMAIN" in bad and host_ip not in bad.split("x.evil.test", 1)[-1], bad
    assert "x.evil.test" not in upstream.queries and "good.test" in upstream.queries
    ev = audits.wait(lambda e: e.type == "dns" and e.dest_name == "x.evil.test")
    assert (ev.effect, ev.control, ev.rule, ev.app_name, ev.protocol) == ("prevent", "dns.deny", "dns-rule", "shop",
                                                                          "dns")
    assert ev.extra["container"] == c.id
    # any resolver address the app picks is steered, and the name case does not matter
    assert "NXDOMAIN" in _lookup(c, "X.EVIL.test", "192.0.2.53")
    d = audits.defender
    assert d is not None and any("dns" in w.protections for w in d.workloads()[0].up)


def test_alert_mode_answers_and_audits(garden: Any, defender: Any, upstream: DnsServer) -> None:
    c, audits, host_ip = _started(garden, defender, upstream, _policy("alert", deny=["evil.test"]))
    upstream.zone["evil.test"] = [host_ip]
    out = _lookup(c, "evil.test", host_ip)
    assert host_ip in out.split("evil.test", 1)[-1], out
    ev = audits.wait(lambda e: e.type == "dns" and e.dest_name == "evil.test")
    assert ev.effect == "alert" and ev.control == "dns.deny"


def test_allow_list_pins_connects_to_resolved_addresses(garden: Any, defender: Any, upstream: DnsServer) -> None:
    c, audits, host_ip = _started(garden, defender, upstream, _policy(allow=["api.good.test"]))
    server = TcpServer(host_ip)
    try:
        upstream.zone.update({"api.good.test": [host_ip], "other.test": [host_ip]})
        # not resolved from an allowed name yet: refused in the kernel, audited
        assert not _connect(c, host_ip, server.port) and server.accepted == 0
        ev = audits.wait(lambda e: e.type == "dns" and e.control == "dns.allow" and e.dest_ip == host_ip)
        assert ev.effect == "prevent" and ev.dest_port == server.port
        assert "NXDOMAIN" in _lookup(c, "other.test", host_ip)  # not on the allow list
        assert not _connect(c, host_ip, server.port)
        assert host_ip in _lookup(c, "api.good.test", host_ip)  # pinned before the answer arrives
        assert _connect(c, host_ip, server.port) and server.accepted == 1
    finally:
        server.close()


def test_resolver_still_answers_under_a_listening_allow_list(garden: Any, defender: Any, upstream: DnsServer) -> None:
    policy = RuntimePolicy.model_validate({"rules": [{"name": "both", "dns": {"effect": "prevent", "deny": ["evil.test"]},
                                                      "network": {"effect": "prevent",
                                                                  "listening": {"allow": ["8080"]}}}]})  # fmt: skip
    c, audits, host_ip = _started(garden, defender, upstream, policy)
    upstream.zone["good.test"] = [host_ip]
    assert host_ip in _lookup(c, "good.test", host_ip)  # the resolver's own port is not an app listener
    assert "NXDOMAIN" in _lookup(c, "evil.test", host_ip)
    d = audits.defender
    assert d is not None
    wl = next(w for w in d.workloads()[0].up if w.container_id == c.id)
    assert not any(x.startswith("udp/") for x in wl.listening)  # nor is it reported as one
    assert not any(e.control.startswith("network.listening") for e in audits.events)


def _tcp_query(c: Any, name: str, server: str) -> Any:
    """A DNS query over TCP from inside the container (busybox nc), the answer parsed on the cell."""
    import struct

    import dns.message

    wire = dns.message.make_query(name, "A").to_wire()
    c.stream_in("/tmp/q.bin", struct.pack("!H", len(wire)) + wire, 0o644)
    c.exec("/bin/sh", "-c", f"/bin/nc -w 3 {server} 53 < /tmp/q.bin > /tmp/a.bin")
    raw = (c.rootfs / "tmp/a.bin").read_bytes()
    assert len(raw) > 2, "no answer over TCP"
    return dns.message.from_wire(raw[2:])


def test_tcp_queries_are_steered_too(garden: Any, defender: Any, upstream: DnsServer) -> None:
    c, audits, host_ip = _started(garden, defender, upstream, _policy(deny=["evil.test"]))
    upstream.zone["good.test"] = [host_ip]
    denied = _tcp_query(c, "evil.test", host_ip)
    assert denied.rcode() == 3  # NXDOMAIN from the defender's resolver, over TCP
    audits.wait(lambda e: e.type == "dns" and e.dest_name == "evil.test")
    assert "evil.test" not in upstream.queries
