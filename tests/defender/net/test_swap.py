"""Issue 9, item 7: without pidfd_getfd (Garden) the guard swaps sockets — it makes its own socket of
the app's kind, carries over flags, options and a prior bind, installs it over the app's descriptor
with SECCOMP_IOCTL_NOTIF_ADDFD + SETFD and performs connect/bind/TCP Fast Open on it. Run with the
guard told not to use pidfd_getfd (the full-defender tests run it under the real Garden-like filter)."""

from __future__ import annotations

import pytest

from .conftest import HOST4
from .servers import TcpServer, UdpServer
from .test_outbound import CONNECT, FASTOPEN, NONBLOCKING, SLOW, _results
from .test_toctou import FLIPPER, RACE, TRIES, _settle

pytestmark = pytest.mark.slow


def test_racing_thread_cannot_swap_in_a_denied_port_without_pidfd_getfd(run_app, ns_call):
    ok, bad = ns_call(lambda: TcpServer(HOST4)), ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{bad.port}"]}}}
    r = run_app(rule, RACE, HOST4, str(ok.port), str(bad.port), str(TRIES), getfd=False, timeout=300)
    connected, refused = map(int, r.out.split())
    _settle(ok, bad)
    print(f"swap mode: {bad.accepted}/{TRIES} racing connects reached the denied port; {r.stats}")
    assert connected + refused == TRIES, r.err
    assert refused > 0, "the flipping thread never won a read: the race was not exercised"
    assert bad.accepted == 0, f"{bad.accepted}/{TRIES} connects reached the denied port"
    assert ok.accepted == connected and r.stats["swapped"] == connected


def test_verdicts_and_nonblocking_semantics_in_swap_mode(run_app, ns_call):
    ok, bad = ns_call(lambda: TcpServer(HOST4)), ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{bad.port}"]}}}
    r = run_app(rule, CONNECT, HOST4, str(ok.port), str(bad.port), getfd=False)
    assert _results(r.out) == {ok.port: 0, bad.port: 111}, r.err
    assert [a.control for a in r.of("network")] == ["network.outbound.deny"]
    r = run_app(rule, NONBLOCKING, HOST4, str(ok.port), str(bad.port), getfd=False)
    assert r.out.splitlines() == ["EINPROGRESS 0", "ECONNREFUSED"], r.err
    assert r.stats["swapped"] == 1


CARRIED = """
import errno, fcntl, socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
opts = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1), (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_REUSEADDR, 1), (socket.IPPROTO_IP, socket.IP_TOS, 0x10),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77), (socket.SOL_SOCKET, socket.SO_PRIORITY, 5)]
for level, opt, val in opts:
    s.setsockopt(level, opt, val)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("=qq", 3, 0))
s.bind((host, 0)); local = s.getsockname()
before = s.fileno()
print("connect", s.connect_ex((host, port)))
print("samefd", s.fileno() == before)
print("options", [s.getsockopt(l, o) == v for l, o, v in opts])
print("rcvtimeo", struct.unpack("=qq", s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))[0])
print("cloexec", bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC))
print("nonblocking", bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFL) & 0o4000))
print("bound", s.getsockname() == local)
print("again", errno.errorcode.get(s.connect_ex((host, port)), 0))
s.sendall(b"hi"); s.close()
n = socket.socket(); n.setblocking(False)
print("nb", errno.errorcode.get(n.connect_ex((host, port)), 0), fcntl.fcntl(n.fileno(), fcntl.F_GETFL) & 0o4000 != 0)
"""


def test_swapped_socket_keeps_flags_options_and_bind(run_app, ns_call):
    srv = ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": ["192.0.2.0/24"]}}}
    r = run_app(rule, CARRIED, HOST4, str(srv.port), getfd=False)
    lines = dict(line.split(" ", 1) for line in r.out.splitlines())
    assert lines == {
        "connect": "0",
        "samefd": "True",
        "options": "[True, True, True, True, True, True]",
        "rcvtimeo": "3",
        "cloexec": "True",
        "nonblocking": "False",
        "bound": "True",
        "again": "EISCONN",
        "nb": "EINPROGRESS True",
    }, (r.out, r.err)
    assert r.stats["swapped"] == 2  # the bind, the non-blocking connect (the connect used the held socket)


BIND_THEN_CONNECT = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.bind((host, 0)); local = s.getsockname()
print(s.connect_ex((host, port)), s.getsockname() == local)
"""


def test_bind_then_connect_keeps_the_ephemeral_port_without_reuseaddr(run_app, ns_call):
    srv = ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": ["192.0.2.0/24"]}}}
    r = run_app(rule, BIND_THEN_CONNECT, HOST4, str(srv.port), getfd=False)
    assert r.out.split() == ["0", "True"], r.err


UDP_REBOUND = """
import socket, sys
host, a, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"first", (host, a)); local = u.getsockname()
u.connect((host, b)); print(u.getsockname()[1] == local[1])
u.send(b"second")
"""


def test_udp_connect_after_send_keeps_the_local_port(run_app, ns_call):
    """The old socket keeps its port until the app's thread returns, so this one is decided and
    continued (racy, like UDP sends in this mode) rather than swapped."""
    a, b = ns_call(lambda: UdpServer(HOST4)), ns_call(lambda: UdpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": ["192.0.2.0/24"]}}}
    r = run_app(rule, UDP_REBOUND, HOST4, str(a.port), str(b.port), getfd=False)
    assert r.out.strip() == "True", r.err
    assert a.drain() == [b"first"] and b.drain() == [b"second"]


def test_blocking_connect_and_fast_open_in_swap_mode(run_app, ns_call, dataplane):
    ok, bad = ns_call(lambda: TcpServer(HOST4)), ns_call(lambda: TcpServer(HOST4))
    # a silent address of its own (see test_outbound: a FAILED neighbour entry answers at once)
    nobody = f"10.99.0.{60 + (dataplane == 'native')}"
    rule = {"network": {"effect": "prevent", "outbound": {"deny": ["192.0.2.0/24"]}}}
    r = run_app(rule, SLOW, HOST4, str(ok.port), nobody, getfd=False)
    assert r.out.split() == ["EINPROGRESS", "True", "0", "True"], r.err
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{bad.port}"]}}}
    r = run_app(rule, FASTOPEN, HOST4, str(ok.port), str(bad.port), getfd=False)
    res = _results(r.out)
    assert res[ok.port] == 5 and res[bad.port] == -111 and bad.accepted == 0, (r.out, r.err)


def test_dns_is_redirected_to_the_proxy_in_swap_mode(run_app):
    code = (
        "import socket\nfor n in ('ok.test', 'x.evil.test'):\n"
        "    try: print(n, socket.getaddrinfo(n, 80, socket.AF_INET)[0][4][0])\n"
        "    except socket.gaierror as e: print(n, e.errno)"
    )
    rule = {"dns": {"effect": "prevent", "deny": ["*.evil.test"]}}
    r = run_app(rule, code, zone={"ok.test": ["10.99.0.7"], "x.evil.test": ["10.99.0.8"]}, getfd=False)
    assert r.out.split() == ["ok.test", "10.99.0.7", "x.evil.test", "-2"], r.err
    assert [a.control for a in r.of("dns")] == ["dns.deny"] and r.stats["redirected"] >= 1


BIND_RACE = (
    FLIPPER
    + """
host, ok, bad, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
buf, stop = flipping(sa(ok), sa(bad))
on_bad = 0
for i in range(n):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if libc.bind(s.fileno(), buf, 16) == 0 and s.getsockname()[1] == bad: on_bad += 1
    s.close()
stop()
print(on_bad)
"""
)


def test_racing_thread_cannot_bind_a_denied_port_in_swap_mode(run_app, ns_call):
    from .servers import free_port

    ok, bad = ns_call(lambda: free_port(HOST4)), ns_call(lambda: free_port(HOST4))
    rule = {"network": {"effect": "prevent", "listening": {"deny": [str(bad)]}}}
    r = run_app(rule, BIND_RACE, HOST4, str(ok), str(bad), "1000", getfd=False, timeout=300)
    assert r.out.strip() == "0", (r.out, r.err)
    assert r.of("listen") and r.stats["swapped"] > 0
