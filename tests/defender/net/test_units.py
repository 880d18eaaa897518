"""Pure parts: sockaddr decoding, the port-scan window, the resolver proxy's decisions and pins."""

from __future__ import annotations

import ipaddress
import socket
import struct

import dns.message
import dns.rcode
import pytest

from garrison.defender.net.dns_proxy import DnsProxy, PinTable, resolv_conf_upstreams
from garrison.defender.net.portscan import PortScanTracker
from garrison.defender.net.sockaddr import (
    MSGHDR,
    BadSockaddr,
    decode_inet,
    decode_msghdr,
    inet_sockaddr,
)
from garrison.policy.model import PortScanDetection, Rule

from .conftest import DnsServer


def _sin(ip: str, port: int) -> bytes:
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(ip) + bytes(8)


def _sin6(ip: str, port: int) -> bytes:
    return (
        struct.pack("=H", socket.AF_INET6)
        + struct.pack("!HI", port, 0)
        + socket.inet_pton(socket.AF_INET6, ip)
        + bytes(4)
    )


def test_decode_v4_v6_and_mapped():
    a = decode_inet(_sin("10.1.2.3", 443))
    assert a is not None and (str(a.ip), a.port, a.shown) == ("10.1.2.3", 443, "10.1.2.3:443")
    b = decode_inet(_sin6("2001:db8::1", 53))
    assert b is not None and (str(b.ip), b.port, b.shown) == ("2001:db8::1", 53, "[2001:db8::1]:53")
    m = decode_inet(_sin6("::ffff:10.0.0.9", 80))
    assert m is not None and m.ip == ipaddress.IPv4Address("10.0.0.9") and m.family == socket.AF_INET6


def test_other_families_and_garbage():
    assert decode_inet(struct.pack("=H", socket.AF_UNIX) + b"/tmp/x\0") is None
    assert decode_inet(struct.pack("=H", socket.AF_NETLINK) + bytes(10)) is None
    with pytest.raises(BadSockaddr):
        decode_inet(_sin("1.2.3.4", 1)[:8])
    with pytest.raises(BadSockaddr):
        decode_inet(b"\x02")


def test_inet_sockaddr_roundtrip_and_mapping():
    ip4 = ipaddress.IPv4Address("127.0.0.1")
    assert decode_inet(inet_sockaddr(ip4, 5353, socket.AF_INET)) == decode_inet(_sin("127.0.0.1", 5353))
    v6 = decode_inet(inet_sockaddr(ip4, 5353, socket.AF_INET6))
    assert v6 is not None and v6.family == socket.AF_INET6 and v6.ip == ip4
    with pytest.raises(BadSockaddr):
        inet_sockaddr(ipaddress.IPv6Address("::1"), 1, socket.AF_INET)


def test_msghdr_layout():
    raw = MSGHDR.pack(0x1000, 16, 0x2000, 3, 0x3000, 24, 0)
    h = decode_msghdr(raw)
    assert (h.name_ptr, h.name_len, h.iov_ptr, h.iov_len, h.control_ptr, h.control_len) == (
        0x1000, 16, 0x2000, 3, 0x3000, 24,
    )  # fmt: skip
    assert MSGHDR.size == 56


def test_port_scan_window_threshold_and_rearm():
    cfg = PortScanDetection(threshold=3, window_s=10)
    t = PortScanTracker()
    v = [t.record(1, "10.0.0.1", p, cfg, now=100.0 + i) for i, p in enumerate((1, 2, 2, 3, 4))]
    assert [x.distinct for x in v] == [1, 2, 2, 3, 4]
    assert [x.first for x in v] == [False, False, False, True, False]
    assert v[2].new_dest is False and v[4].scanning
    assert t.record(2, "10.0.0.1", 1, cfg, now=104.0).distinct == 1  # per process
    later = t.record(1, "10.0.0.1", 9, cfg, now=200.0)  # window slid: re-armed
    assert later.distinct == 1 and not later.scanning


def test_port_scan_memory_is_bounded_for_repeats():
    cfg = PortScanDetection(threshold=50, window_s=3600)
    t = PortScanTracker()
    for i in range(10000):
        t.record(1, "10.0.0.1", 80, cfg, now=float(i) / 100)
    assert len(t._procs[1].order) < 100


def test_pin_table_expiry_and_names():
    pins = PinTable(min_ttl_s=0.0)
    pins.add("10.0.0.1", "Good.Test.", 60)
    pins.add("10.0.0.1", "alias.test", -1)  # already expired
    assert pins.names_for("10.0.0.1") == ["good.test"]
    assert pins.names_for("10.0.0.2") == []


def test_resolv_conf_parsing(tmp_path):
    p = tmp_path / "resolv.conf"
    p.write_text("# c\nsearch x\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bogus\n")
    assert resolv_conf_upstreams(str(p)) == [("10.0.0.2", 53), ("fe80::1", 53)]
    assert resolv_conf_upstreams(str(tmp_path / "missing")) == [("127.0.0.1", 53)]


@pytest.fixture
def proxy():
    up = DnsServer({"good.test": ["192.0.2.10", "2001:db8::10"], "x.evil.test": ["192.0.2.66"]})
    audits: list[tuple[str, str, bool]] = []
    holder: dict[str, Rule | None] = {"rule": None}
    p = DnsProxy(
        lambda: holder["rule"],
        lambda n, d, c: audits.append((n, d.control, d.blocked)),
        PinTable(),
        [up.address],
    )
    p.start()
    yield p, holder, audits, up
    p.stop()
    up.close()


def _ask(addr, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        with socket.create_connection(addr, timeout=5) as s:
            w = q.to_wire()
            s.sendall(struct.pack("!H", len(w)) + w)
            n = struct.unpack("!H", s.recv(2))[0]
            data = b""
            while len(data) < n:
                data += s.recv(n - len(data))
            return dns.message.from_wire(data)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(q.to_wire(), addr)
        return dns.message.from_wire(s.recv(65535))


def test_proxy_forwards_and_pins(proxy):
    p, _, audits, up = proxy
    r = _ask(p.address, "good.test")
    assert r.rcode() == dns.rcode.NOERROR and [str(x) for x in r.answer[0]] == ["192.0.2.10"]
    _ask(p.address, "good.test", "AAAA", tcp=False)
    assert p.pins.names_for("192.0.2.10") == ["good.test"] and p.pins.names_for("2001:db8::10") == [
        "good.test"
    ]
    assert not audits and up.queries == ["good.test", "good.test"]


@pytest.mark.parametrize("tcp", [False, True])
def test_proxy_refuses_denied_names(proxy, tcp):
    p, holder, audits, up = proxy
    holder["rule"] = Rule(name="r", dns={"effect": "prevent", "deny": ["*.evil.test"]})
    r = _ask(p.address, "x.evil.test", tcp=tcp)
    assert r.rcode() == dns.rcode.NXDOMAIN and not r.answer
    assert audits == [("x.evil.test", "dns.deny", True)] and up.queries == []
    assert p.pins.names_for("192.0.2.66") == []


def test_proxy_alert_forwards_and_audits(proxy):
    p, holder, audits, _ = proxy
    holder["rule"] = Rule(name="r", dns={"effect": "alert", "allow": ["good.test"]})
    r = _ask(p.address, "x.evil.test")
    assert r.rcode() == dns.rcode.NOERROR and r.answer
    assert audits == [("x.evil.test", "dns.allow", False)]


def test_proxy_ignores_garbage_and_survives(proxy):
    p, *_ = proxy
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\x00\x01garbage", p.address)
    assert _ask(p.address, "good.test").rcode() == dns.rcode.NOERROR


def test_daemon_pool_runs_everything_and_reuses_threads():
    import threading as th

    from garrison.defender.net.workers import DaemonPool

    pool = DaemonPool(max_threads=4)
    done: list[int] = []
    lock = th.Lock()
    ev = th.Event()

    def task(i: int) -> None:
        with lock:
            done.append(i)
            if len(done) == 200:
                ev.set()

    for i in range(200):
        pool.submit(lambda i=i: task(i))
    assert ev.wait(10) and sorted(done) == list(range(200))
    assert pool._threads <= 4
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_bad_reputation_list_is_compiled_and_exact():
    from garrison.policy.evaluate import decide_connect

    ips = [f"10.0.{i // 256}.{i % 256}" for i in range(0, 5000, 2)] + ["2001:db8::/32", "192.0.2.0/24"]
    r = Rule(name="r", network={"effect": "prevent", "bad_reputation_ips": ips})
    cases = {
        "10.0.0.0": True,
        "10.0.0.1": False,
        "10.0.19.134": True,
        "10.0.19.135": False,
        "192.0.2.255": True,
        "::ffff:192.0.2.7": True,
        "2001:db8::9": True,
        "2001:db9::": False,
        "9.255.255.255": False,
    }
    for ip, bad in cases.items():
        d = decide_connect(r, ip, 443)
        assert d.violation == bad, ip
        assert not bad or d.control == "network.bad_reputation_ips"
