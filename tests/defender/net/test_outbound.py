"""Outbound controls through a real seccomp listener: TCP/UDP, v4/v6/v4-mapped, alert/prevent."""

from __future__ import annotations

import threading
import time

import pytest

from .conftest import HOST4, HOST6, OTHER4, rule_from
from .servers import TcpServer, UdpServer

pytestmark = pytest.mark.slow

CONNECT = """
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
for port in sys.argv[2:]:
    s = socket.socket(fam, socket.SOCK_STREAM)
    print(port, s.connect_ex((sys.argv[1], int(port))))
    s.close()
"""


def _results(out: str) -> dict[int, int]:
    return {int(p): int(r) for p, r in (line.split() for line in out.split("\n") if line.strip())}


def _wait_accepts(srv: TcpServer, n: int) -> int:
    deadline = time.monotonic() + 5
    while srv.accepted < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return srv.accepted


@pytest.mark.parametrize("effect", ["prevent", "alert"])
def test_denied_port_v4(run_app, ns_call, effect):
    ok, bad = ns_call(lambda: TcpServer(HOST4)), ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": effect, "outbound": {"deny": [f"{HOST4}:{bad.port}"]}}}
    r = run_app(rule, CONNECT, HOST4, str(ok.port), str(bad.port))
    res = _results(r.out)
    assert r.rc == 0, r.err
    assert res[ok.port] == 0
    [audit] = r.of("network")
    assert (audit.control, audit.effect, audit.dest_ip, audit.dest_port) == (
        "network.outbound.deny",
        effect,
        HOST4,
        bad.port,
    )
    assert audit.protocol == "tcp" and audit.exe and audit.exe.endswith("python3.11")
    if effect == "prevent":
        assert res[bad.port] == 111  # ECONNREFUSED
        assert _wait_accepts(ok, 1) == 1 and bad.accepted == 0
    else:
        assert res[bad.port] == 0
        assert _wait_accepts(bad, 1) == 1


def test_denied_cidr_v6_and_allow_list(run_app, ns_call):
    ok = ns_call(lambda: TcpServer(HOST6))
    other = ns_call(lambda: TcpServer(OTHER4))
    rule = {"network": {"effect": "prevent", "outbound": {"allow": [f"[{HOST6}]:{ok.port}"]}}}
    r6 = run_app(rule, CONNECT, HOST6, str(ok.port))
    r4 = run_app(rule, CONNECT, OTHER4, str(other.port))
    assert _results(r6.out)[ok.port] == 0 and not r6.audits
    assert _results(r4.out)[other.port] == 111
    assert [a.control for a in r4.of("network")] == ["network.outbound.allow"]
    deny6 = {
        "network": {"effect": "prevent", "outbound": {"deny": [{"cidr": "fd00:99::/64", "ports": "1-65535"}]}}
    }
    r = run_app(deny6, CONNECT, HOST6, str(ok.port))
    assert _results(r.out)[ok.port] == 111 and r.of("network")[0].dest_ip == HOST6


def test_v4_mapped_v6_is_decided_as_v4(run_app, ns_call):
    bad = ns_call(lambda: TcpServer("::", 0))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}/32"]}}}
    r = run_app(rule, CONNECT, f"::ffff:{HOST4}", str(bad.port))
    assert _results(r.out)[bad.port] == 111, r.err
    assert r.of("network")[0].dest_ip == HOST4
    assert bad.accepted == 0


NONBLOCKING = """
import socket, sys, select, errno
s = socket.socket(); s.setblocking(False)
rc = s.connect_ex((sys.argv[1], int(sys.argv[2])))
select.select([], [s], [], 5)
print(errno.errorcode.get(rc, rc), s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
s2 = socket.socket(); s2.setblocking(False)
print(errno.errorcode.get(s2.connect_ex((sys.argv[1], int(sys.argv[3]))), "?"))
"""


def test_nonblocking_connect_keeps_einprogress_semantics(run_app, ns_call):
    ok, bad = ns_call(lambda: TcpServer(HOST4)), ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{bad.port}"]}}}
    r = run_app(rule, NONBLOCKING, HOST4, str(ok.port), str(bad.port))
    first, second = r.out.splitlines()
    assert first == "EINPROGRESS 0", r.err
    assert second == "ECONNREFUSED"
    assert r.stats["emulated"] >= 1


UDP = """
import socket, sys
host, ok, bad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
u = socket.socket(fam, socket.SOCK_DGRAM)
for port in (ok, bad):
    try: print("sendto", port, u.sendto(b"hello", (host, port)))
    except OSError as e: print("sendto", port, -e.errno)
    try: print("sendmsg", port, u.sendmsg([b"he", b"llo"], [], 0, (host, port)))
    except OSError as e: print("sendmsg", port, -e.errno)
"""


@pytest.mark.parametrize("host", [HOST4, HOST6])
@pytest.mark.parametrize("effect", ["prevent", "alert"])
def test_udp_sendto_and_sendmsg(run_app, ns_call, host, effect):
    ok, bad = ns_call(lambda: UdpServer(host)), ns_call(lambda: UdpServer(host))
    rule = {
        "network": {
            "effect": effect,
            "outbound": {"deny": [{"cidr": host, "ports": str(bad.port), "protocol": "udp"}]},
        }
    }
    r = run_app(rule, UDP, host, str(ok.port), str(bad.port))
    assert r.rc == 0, r.err
    lines = dict((" ".join(x.split()[:2]), int(x.split()[2])) for x in r.out.splitlines())
    assert lines[f"sendto {ok.port}"] == 5 and lines[f"sendmsg {ok.port}"] == 5
    assert ok.drain() == [b"hello", b"hello"]
    assert {a.protocol for a in r.of("network")} == {"udp"} and len(r.of("network")) == 2
    if effect == "prevent":
        assert lines[f"sendto {bad.port}"] == -1 and lines[f"sendmsg {bad.port}"] == -1  # EPERM
        assert bad.drain() == []
    else:
        assert bad.drain() == [b"hello", b"hello"]


SENDMMSG = """
import ctypes, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
host, ok, bad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def sa(p): return struct.pack("=H", 2) + struct.pack("!H", p) + socket.inet_aton(host) + bytes(8)
class iovec(ctypes.Structure): _fields_ = [("b", ctypes.c_void_p), ("l", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("n", ctypes.c_void_p), ("nl", ctypes.c_uint), ("iov", ctypes.POINTER(iovec)), ("iovl", ctypes.c_size_t),
                ("c", ctypes.c_void_p), ("cl", ctypes.c_size_t), ("f", ctypes.c_int)]
class mmsghdr(ctypes.Structure): _fields_ = [("h", msghdr), ("len", ctypes.c_uint)]
keep = []
def msg(port, data):
    name = ctypes.create_string_buffer(sa(port), 16); buf = ctypes.create_string_buffer(data, len(data))
    iov = iovec(ctypes.cast(buf, ctypes.c_void_p), len(data)); keep.extend([name, buf, iov])
    return mmsghdr(msghdr(ctypes.cast(name, ctypes.c_void_p), 16, ctypes.pointer(iov), 1, None, 0, 0), 0)
vec = (mmsghdr * 3)(msg(ok, b"one"), msg(ok, b"two"), msg(bad, b"three"))
n = libc.sendmmsg(u.fileno(), vec, 3, 0)
print(n, ctypes.get_errno(), [vec[i].len for i in range(3)])
vec2 = (mmsghdr * 2)(msg(bad, b"x"), msg(ok, b"y"))
print(libc.sendmmsg(u.fileno(), vec2, 2, 0), ctypes.get_errno())
"""


def test_sendmmsg_decides_every_address(run_app, ns_call):
    ok, bad = ns_call(lambda: UdpServer(HOST4)), ns_call(lambda: UdpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{bad.port}"]}}}
    r = run_app(rule, SENDMMSG, HOST4, str(ok.port), str(bad.port))
    first, second = r.out.splitlines()
    assert first.startswith("2 ") and first.endswith("[3, 3, 0]"), (r.out, r.err)
    assert second == "-1 1"  # first message denied: EPERM, nothing sent
    assert ok.drain() == [b"one", b"two"] and bad.drain() == []


BAD_REP = CONNECT


@pytest.mark.parametrize("effect", ["prevent", "alert"])
def test_bad_reputation_ip(run_app, ns_call, effect):
    bad = ns_call(lambda: TcpServer(OTHER4))
    ok = ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": effect, "bad_reputation_ips": [f"{OTHER4}/32"]}}
    r = run_app(rule, BAD_REP, OTHER4, str(bad.port))
    r_ok = run_app(rule, CONNECT, HOST4, str(ok.port))
    [audit] = r.of("bad_reputation")
    assert audit.severity == "high" and audit.effect == effect
    assert _results(r.out)[bad.port] == (111 if effect == "prevent" else 0)
    assert _results(r_ok.out)[ok.port] == 0 and not r_ok.audits


UNIX = """
import socket, os, tempfile
a, b = socket.socketpair(); a.send(b"x"); print(b.recv(1))
d = tempfile.mkdtemp(); path = os.path.join(d, "s")
srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen(1)
c = socket.socket(socket.AF_UNIX); print(c.connect_ex(path))
n = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); n.bind((0, 0)); print("netlink ok")
"""


def test_unix_and_netlink_pass_under_deny_all(run_app):
    rule = {"network": {"effect": "prevent", "outbound": {"deny": ["*"]}, "listening": {"deny": ["1-65535"]}}}
    r = run_app(rule, UNIX)
    assert r.out.split() == ["b'x'", "0", "netlink", "ok"], r.err
    assert not r.audits


def test_send_on_connected_socket_is_not_rechecked(run_app, ns_call):
    ok = ns_call(lambda: UdpServer(HOST4))
    code = (
        "import socket,sys\nu=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "u.connect((sys.argv[1],int(sys.argv[2])))\nprint(u.send(b'abc'))"
    )
    r = run_app({"network": {"effect": "prevent"}}, code, HOST4, str(ok.port))
    assert r.out.strip() == "3" and ok.drain() == [b"abc"]


def test_no_rule_allows_everything(run_app, ns_call):
    ok = ns_call(lambda: TcpServer(HOST4))
    r = run_app(None, CONNECT, HOST4, str(ok.port))
    assert _results(r.out)[ok.port] == 0 and not r.audits
    assert r.stats["emulated"] == 0  # nothing can object: no emulation cost


def test_rule_without_network_controls_is_not_emulated_but_dns_still_is(run_app, ns_call):
    ok = ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": "prevent"}, "processes": {"effect": "prevent"}}
    r = run_app(rule, CONNECT, HOST4, str(ok.port))
    assert _results(r.out)[ok.port] == 0 and r.stats["emulated"] == 0
    r = run_app({"dns": {"effect": "prevent", "deny": ["*.evil.test"]}}, CONNECT, HOST4, str(ok.port))
    assert _results(r.out)[ok.port] == 0 and r.stats["emulated"] == 1  # DNS rules need the redirect


def test_continue_fallback_still_decides(run_app, ns_call):
    """Without pidfd_getfd (Garden) the guard decides and CONTINUEs: same verdicts, weaker race guarantee."""
    ok, bad = ns_call(lambda: TcpServer(HOST4)), ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{bad.port}"]}}}
    r = run_app(rule, CONNECT, HOST4, str(ok.port), str(bad.port), emulate=False)
    res = _results(r.out)
    assert res == {ok.port: 0, bad.port: 111}
    assert r.stats["emulated"] == 0 and r.stats["continued"] >= 1


SLOW = """
import socket, struct, sys, threading, time, errno
host, ok, nobody = sys.argv[1], int(sys.argv[2]), sys.argv[3]
res = {}
def slow():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("=qq", 1, 0))
    t = time.monotonic()
    res["slow"] = (errno.errorcode.get(s.connect_ex((nobody, 80)), "0"), time.monotonic() - t)
th = threading.Thread(target=slow); th.start()
time.sleep(0.2)
s = socket.socket(); res["fast"] = s.connect_ex((host, ok)); res["fast_done_while_slow_waits"] = th.is_alive()
th.join()
print(res["slow"][0], res["slow"][1] >= 0.9, res["fast"], res["fast_done_while_slow_waits"])
"""


@pytest.mark.parametrize(
    "rule",
    [
        {"network": {"effect": "prevent"}},
        {"network": {"effect": "prevent", "outbound": {"deny": ["10.99.1.0/24"]}}},
    ],
)
def test_blocking_connect_in_progress_waits_off_the_listener_and_honours_sndtimeo(
    run_app, ns_call, dataplane, rule
):
    ok = ns_call(lambda: TcpServer(HOST4))
    # 10.99.0.5x has no host behind it: the SYN waits for ARP, SO_SNDTIMEO (1 s) ends the wait. One
    # address per run: a neighbour entry left FAILED by an earlier run answers EHOSTUNREACH at once.
    nobody = f"10.99.0.{50 + (2 if 'outbound' in rule['network'] else 0) + (dataplane == 'native')}"
    r = run_app(rule, SLOW, HOST4, str(ok.port), nobody)
    assert r.out.split() == ["EINPROGRESS", "True", "0", "True"], r.err


LIVE = """
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
first = None
for i in range(400):
    s = socket.socket(); r = s.connect_ex((host, port)); s.close()
    if first is None: first = r
    if r == 111: break
    time.sleep(0.01)
print(first, r)
"""


def test_policy_update_applies_live(run_app, ns_call):
    srv = ns_call(lambda: TcpServer(HOST4))
    new = rule_from({"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{srv.port}"]}}})

    def later(ctx) -> None:
        threading.Timer(0.5, lambda: setattr(ctx, "current", new)).start()

    r = run_app({"network": {"effect": "prevent"}}, LIVE, HOST4, str(srv.port), during=later)
    assert r.out.split() == ["0", "111"], r.err
    assert [a.control for a in r.of("network")] == ["network.outbound.deny"]


FASTOPEN = """
import socket, sys
host, ok, bad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for port in (ok, bad):
    s = socket.socket()
    try: print(port, s.sendto(b"GET /", socket.MSG_FASTOPEN, (host, port)))
    except OSError as e: print(port, -e.errno)
"""


def test_tcp_fast_open_sendto_cannot_bypass_connect_rules(run_app, ns_call):
    ok, bad = ns_call(lambda: TcpServer(HOST4)), ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{bad.port}"]}}}
    r = run_app(rule, FASTOPEN, HOST4, str(ok.port), str(bad.port))
    res = _results(r.out)
    assert res[ok.port] == 5, r.err  # TFO connect + data on the allowed port
    assert res[bad.port] == -111 and bad.accepted == 0
    assert [a.control for a in r.of("network")] == ["network.outbound.deny"]


def test_sendmmsg_fallback_refuses_the_whole_batch(run_app, ns_call):
    """CONTINUE cannot stop half-way, so a batch holding a denied address is refused as a whole."""
    ok, bad = ns_call(lambda: UdpServer(HOST4)), ns_call(lambda: UdpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{bad.port}"]}}}
    r = run_app(rule, SENDMMSG, HOST4, str(ok.port), str(bad.port), emulate=False)
    first, second = r.out.splitlines()
    assert first.startswith("-1 1 "), (r.out, r.err)
    assert second == "-1 1"
    assert ok.drain() == [] and bad.drain() == []


BAD_POINTERS = """
import ctypes, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
for addr in (1, 0xdead0000):  # unmapped: the kernel itself would answer EFAULT
    rc = libc.connect(s.fileno(), ctypes.c_void_p(addr), 16)
    print(rc, ctypes.get_errno())
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rc = libc.sendto(u.fileno(), b"x", 1, 0, ctypes.c_void_p(0xdead0000), 16)
print(rc, ctypes.get_errno())
"""


def test_unreadable_sockaddr_gets_efault_not_a_hang(run_app):
    """A live thread whose arguments cannot be read must still get an answer (EFAULT, as the kernel
    would give), never be left waiting on a notification nobody replies to."""
    rule = {"network": {"effect": "prevent", "outbound": {"deny": ["192.0.2.0/24"]}}}
    r = run_app(rule, BAD_POINTERS, timeout=60)
    assert r.rc == 0, r.err
    lines = [tuple(map(int, line.split())) for line in r.out.split("\n") if line.strip()]
    assert lines == [(-1, 14), (-1, 14), (-1, 14)], r.out
