"""The native data plane: its tables agree with the shared evaluator, it really decides in C, its audits
are the Python path's audits, a policy push swaps its tables, and a full record ring is audited."""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from garrison.defender.dataplane import choose, native_available, tables
from garrison.defender.net import NetworkGuard
from garrison.defender.net.normalise import normalise
from garrison.defender.net.standalone import StandaloneContext
from garrison.policy.model import Rule
from tests.polling import until

from .conftest import HOST4, HOST6, rule_from
from .servers import TcpServer, UdpServer
from .test_outbound import CONNECT, _results

native = pytest.mark.skipif(not native_available()[0], reason=native_available()[1] or "native")

# -- tables vs the evaluator -------------------------------------------------------------------------
_v4 = st.integers(0, (1 << 32) - 1).map(lambda n: ipaddress.IPv4Address(n))
_v6 = st.integers(1 << 97, (1 << 128) - 1).map(lambda n: ipaddress.IPv6Address(n))  # never mapped/compat
_near_v4 = st.sampled_from(
    ["10.0.0.0", "10.1.2.3", "10.1.255.255", "192.168.1.1", "127.0.0.1", "127.0.0.9", "8.8.8.8", "0.1.2.3"]
)
_near_v6 = st.sampled_from(["fd00::1", "fd00:99::2", "2001:db8::1", "2001:db8:ffff::", "::1", "fe80::1"])


@st.composite
def _target(draw: st.DrawFn) -> dict[str, object]:
    if draw(st.booleans()):
        net = ipaddress.ip_network(f"{draw(_near_v4)}/{draw(st.integers(8, 32))}", strict=False)
    else:
        net = ipaddress.ip_network(f"{draw(_near_v6)}/{draw(st.integers(16, 128))}", strict=False)
    cidr = draw(st.sampled_from([str(net), str(net), "*", "0.0.0.0/0"]))
    lo = draw(st.integers(0, 65535))
    ports = draw(st.sampled_from(["*", str(lo), f"{lo}-{min(65535, lo + 100)}", f"22,{lo}"]))
    return {"cidr": cidr, "ports": ports, "protocol": draw(st.sampled_from(["any", "tcp", "udp"]))}


@st.composite
def _rule(draw: st.DrawFn) -> Rule:
    net = {
        "effect": draw(st.sampled_from(["alert", "prevent", "disable"])),
        "outbound": {
            "deny": draw(st.lists(_target(), max_size=6)),
            "allow": draw(st.lists(_target(), max_size=6)),
        },
        "bad_reputation_ips": draw(
            st.lists(st.sampled_from(["8.8.8.0/24", "2001:db8::/48", "10.1.2.3"]), max_size=2)
        ),
    }
    return rule_from({"network": net})


@st.composite
def _address(draw: st.DrawFn) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return draw(st.one_of(_v4, _v6, _near_v4.map(ipaddress.ip_address), _near_v6.map(ipaddress.ip_address)))


def _sockaddr(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bytes:
    if addr.version == 4:
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + addr.packed + bytes(8)
    return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0) + addr.packed + bytes(4)


def _handed_to_python(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Forms whose meaning the normalisation table changes: the loop leaves them to Python."""
    if addr.version == 4:
        return int(addr) == 0
    n = int(addr)
    return addr != ipaddress.IPv6Address("::1") and (
        n >> 32 == 0 or addr.ipv4_mapped is not None or n >> 32 == 0x64FF9B << 64 or n >> 112 == 0x2002
    )


_GUARD = NetworkGuard(StandaloneContext(None))


@native
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rule=_rule(),
    addr=_address(),
    port=st.sampled_from([22, 80, 443, 5432, 65535, 0]),
    proto=st.sampled_from([1, 2]),
)
def test_tables_decide_like_the_guard(rule: Rule, addr, port: int, proto: int) -> None:
    """The loop's verdict for every canonical destination equals NetworkGuard._decision over the
    forms `normalise` gives it (loopback: itself, 127.0.0.1 and ::1)."""
    from garrison.defender.dataplane import _native

    if _handed_to_python(addr):
        return
    compiled = tables.compile_rule(rule, emulate=True)
    kind, control, entry, effect, cand = _native.decide(compiled.blob, addr.packed, port, proto)
    fam = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    kinds = {1: socket.SOCK_STREAM, 2: socket.SOCK_DGRAM}
    dest = normalise(_sockaddr(addr, port), call="connect", sock_family=fam, sock_type=kinds[proto])
    want = _GUARD._decision(rule, dest, "tcp" if proto == 1 else "udp", [])
    assert kind != 2  # no DNS allow-list here: nothing needs Python
    assert (kind == 1) == want.violation, (want, dest)
    if want.violation:
        assert tables.CONTROLS[control] == want.control
        assert effect == tables.EFFECTS[want.effect]
        if want.control == "network.outbound.deny":
            shown = ipaddress.ip_address(cand)
            assert (
                want.reason
                == f"{shown}:{port}/{'tcp' if proto == 1 else 'udp'} matches deny {compiled.entries[entry].cidr}"
            )


@native
def test_dns_allow_list_hands_pinned_decisions_to_python() -> None:
    from garrison.defender.dataplane import _native

    rule = rule_from({"network": {"effect": "prevent", "outbound": {"allow": ["10.1.0.0/16:443"]}},
                      "dns": {"effect": "prevent", "allow": ["*.ok.test"]}})  # fmt: skip
    blob = tables.compile_rule(rule, emulate=True).blob
    assert _native.decide(blob, ipaddress.ip_address("10.1.2.3").packed, 443, 1)[0] == 0  # allow-listed
    assert _native.decide(blob, ipaddress.ip_address("10.9.9.9").packed, 443, 1)[0] == 2  # pins decide


def test_switch_and_startup_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose({"DEFENDER_DATAPLANE": "python"}) == (
        "python",
        "data plane: python (DEFENDER_DATAPLANE=python)",
    )
    mode, line = choose({"DEFENDER_DATAPLANE": "bogus"})
    assert mode == "python" and "not native|python" in line
    mode, line = choose({})
    assert mode == ("native" if native_available()[0] else "python") and line.startswith("data plane: ")


def test_large_rule_compiles_to_merged_intervals() -> None:
    deny = [f"10.{i // 250}.{i % 250}.0/24:{1000 + i}" for i in range(1000)]
    rule = rule_from({"network": {"effect": "prevent", "outbound": {"deny": deny, "allow": ["*:1-65535"]}}})
    compiled = tables.compile_rule(rule, emulate=True)
    assert len(compiled.entries) == 1001 and len(compiled.blob) < 200_000


# -- the real loop -------------------------------------------------------------------------------------
@native
@pytest.mark.slow
def test_native_loop_decides_connects_itself_with_the_same_audits(run_app, ns_call, dataplane):
    ok, bad = ns_call(lambda: TcpServer(HOST4)), ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{bad.port}"]}}}
    r = run_app(rule, CONNECT, HOST4, str(ok.port), str(bad.port))
    assert _results(r.out) == {ok.port: 0, bad.port: 111}, r.err
    [audit] = r.of("network")
    assert (audit.control, audit.effect, audit.dest_ip, audit.dest_port, audit.protocol) == (
        "network.outbound.deny", "prevent", HOST4, bad.port, "tcp")  # fmt: skip
    assert audit.message == f"{HOST4}:{bad.port}/tcp matches deny {HOST4}"
    if dataplane == "native":
        st_ = r.extra["native"]
        assert st_["native"] >= 2 and st_["emulated"] >= 1 and st_["refused"] == 1, st_
        assert r.stats["emulated"] >= 1 and r.stats["refused"] == 1


@native
@pytest.mark.slow
def test_native_udp_sendto_and_sendmsg_v6(run_app, ns_call, dataplane):
    ok = ns_call(lambda: UdpServer(HOST6))
    code = (
        "import socket,sys\nu=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
        "print(u.sendto(b'one',(sys.argv[1],int(sys.argv[2]))))\n"
        "print(u.sendmsg([b'tw',b'o'],[],0,(sys.argv[1],int(sys.argv[2]))))\n"
        "try: u.sendto(b'x',(sys.argv[1],int(sys.argv[3])))\nexcept OSError as e: print(-e.errno)\n"
    )
    rule = {"network": {"effect": "prevent", "outbound": {"allow": [f"[{HOST6}]:{ok.port}"]}}}
    r = run_app(rule, code, HOST6, str(ok.port), str(ok.port + 1 if ok.port < 65535 else 1))
    assert r.out.split() == ["3", "3", "-1"], r.err
    assert sorted(ok.drain()) == [b"one", b"two"]
    [audit] = r.of("network")
    assert audit.control == "network.outbound.allow" and audit.protocol == "udp"
    if dataplane == "native":
        assert r.extra["native"]["emulated"] >= 2 and r.extra["native"]["handed_over"] == 0


LIVE = """
import os, socket, sys, time
host, port, pushed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(); print(s.connect_ex((host, port))); s.close()
sys.stdout.flush()
deadline = time.monotonic() + 60
while not os.path.exists(pushed) and time.monotonic() < deadline:
    time.sleep(0.01)
s = socket.socket(); print(s.connect_ex((host, port))); s.close()
"""


@native
@pytest.mark.slow
def test_policy_push_swaps_the_tables_of_a_running_loop(run_app, ns_call, dataplane, tmp_path):
    """The push lands between the app's two connects (the app waits for it: no timer to race)."""
    srv = ns_call(lambda: TcpServer(HOST4))
    new = rule_from({"network": {"effect": "alert", "outbound": {"deny": [f"{HOST4}:{srv.port}"]}}})
    newer = rule_from({"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}/32"]}}})
    pushed = tmp_path / "pushed"
    tmp_path.chmod(0o755)

    def between_the_connects(ctx) -> None:
        until(lambda: srv.accepted == 1, 60, "the app's first connect")
        ctx.current = new
        ctx.current = newer  # two pushes back to back: the last one holds
        pushed.touch()

    r = run_app({"network": {"effect": "prevent", "outbound": {"allow": ["*"]}}}, LIVE, HOST4, str(srv.port),
                str(pushed), during=between_the_connects)  # fmt: skip
    assert r.out.split() == ["0", "111"], r.err
    assert [(a.control, a.effect) for a in r.of("network")] == [("network.outbound.deny", "prevent")]


MANY = """
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
bad = 0
for _ in range(n):
    s = socket.socket(); bad += s.connect_ex((host, port)) != 0; s.close()
print(bad)
"""


@native
@pytest.mark.slow
def test_full_ring_counts_drops_and_says_so_without_blocking_the_app(run_app, ns_call, dataplane):
    if dataplane != "native":
        pytest.skip("the ring belongs to the native data plane")
    srv = ns_call(lambda: TcpServer(HOST4))
    hold = threading.Event()
    hold.set()
    threading.Timer(20, hold.clear).start()  # never hold longer than that, whatever happens

    rule = {"network": {"effect": "alert", "outbound": {"deny": [f"{HOST4}:{srv.port}"]}}}
    r = run_app(rule, MANY, HOST4, str(srv.port), "300",
                dataplane_options={"ring_slots": 64, "hold_records": hold})  # fmt: skip
    hold.clear()
    assert r.out.strip() == "0", r.err  # alert: every connect went through, none waited for the ring
    st_ = r.extra["native"]
    assert st_["dropped"] >= 300 - 64, st_
    drops = [a for a in r.audits if a.control == "dataplane.ring"]
    assert drops and sum(a.extra["dropped"] for a in drops) == st_["dropped"]
    assert len(r.of("network")) == 300 - st_["dropped"]


@native
def test_pinned_allowed_names_are_decided_natively() -> None:
    """An address an allowed name resolved to passes in the loop; other addresses still go to Python
    (which has the names for the audit); an expired pin is not trusted."""
    import time

    from garrison.defender.dataplane import _native

    rule = rule_from({"network": {"effect": "prevent", "outbound": {"allow": ["10.1.0.0/16:443"]}},
                      "dns": {"effect": "prevent", "allow": ["*.ok.test"], "deny": ["bad.ok.test"]}})  # fmt: skip
    compiled = tables.compile_rule(rule, emulate=True)
    now = time.monotonic()
    pins = {
        "10.9.9.9": {"api.ok.test": now + 300},
        "10.8.8.8": {"bad.ok.test": now + 300},  # denied name: not a pin that allows
        "10.7.7.7": {"old.ok.test": now - 5},  # expired
        "fd00::9": {"v6.ok.test": now + 300},
    }
    blob = tables.with_pins(compiled, pins)
    ip = ipaddress.ip_address
    assert _native.decide(blob, ip("10.9.9.9").packed, 443, 1)[0] == 0
    assert (
        _native.decide(blob, ip("10.9.9.9").packed, 80, 1)[0] == 0
    )  # pinned: the allow-list miss is forgiven
    assert _native.decide(blob, ip("fd00::9").packed, 22, 1)[0] == 0
    for other in ("10.8.8.8", "10.7.7.7", "10.6.6.6"):
        assert _native.decide(blob, ip(other).packed, 443, 1)[0] == 2, other
    for addr, port in (("10.9.9.9", 80), ("fd00::9", 22), ("10.8.8.8", 80)):
        want = _GUARD._decide_one(
            rule, ip(addr), port, "tcp", [n for n in pins[addr]] if addr in pins else []
        )
        assert not want.violation or addr == "10.8.8.8"


@native
@settings(max_examples=300, deadline=None)
@given(st.one_of(_v4, st.integers(0, (1 << 128) - 1).map(ipaddress.IPv6Address), st.sampled_from(
    [ipaddress.ip_address(a) for a in ("::", "::1", "1::", "1:0:0:1::1", "1:0:0:1:0:0:1:1", "fe80::", "2001:db8::1:0:0:1")]
)))  # fmt: skip
def test_loop_writes_addresses_as_ipaddress_does(addr) -> None:
    """The loop formats the forensic "net" lines itself; the address must read as Python writes it."""
    from garrison.defender.dataplane import _native  # type: ignore[attr-defined]

    if isinstance(addr, ipaddress.IPv6Address) and (addr.ipv4_mapped or addr.sixtofour):
        return  # never decided by the loop (handed over); newer Pythons write these dotted
    assert _native.format_ip(addr.packed) == str(addr)
