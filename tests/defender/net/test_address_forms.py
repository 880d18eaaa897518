"""Issue 9, item 1: address forms the kernel routes to a denied destination, through a real seccomp
listener (app as nobody, in the test namespace). Each variant: prevent refuses and audits, alert lets
it through and audits."""

from __future__ import annotations

import time

import pytest

from tests.defender.test_net_address_forms import CONNECT_FORMS, FORMS

from .conftest import HOST4
from .servers import TcpServer, UdpServer
from .test_toctou import FLIPPER

pytestmark = pytest.mark.slow


def _loopback_listeners(ns_call):
    first = ns_call(lambda: TcpServer("127.0.0.1"))
    port = first.port
    return port, [
        first,
        ns_call(lambda: TcpServer("127.0.0.2", port)),
        ns_call(lambda: TcpServer("::1", port)),
    ]


def _settled(servers) -> int:
    last = -1
    while sum(s.accepted for s in servers) != last:
        last = sum(s.accepted for s in servers)
        time.sleep(0.2)
    return last


@pytest.mark.parametrize("effect", ["prevent", "alert"])
def test_every_loopback_form_is_decided_as_the_denied_loopback(run_app, ns_call, effect):
    port, servers = _loopback_listeners(ns_call)
    rule = {"network": {"effect": effect, "outbound": {"deny": [f"127.0.0.1:{port}"]}}}
    r = run_app(rule, CONNECT_FORMS, str(port), *FORMS)
    got = dict(line.split() for line in r.out.splitlines())
    assert set(got) == set(FORMS), (r.out, r.err)
    audits = r.of("network")
    assert len(audits) == len(FORMS) and {a.effect for a in audits} == {effect}
    assert all(a.control == "network.outbound.deny" and a.dest_port == port for a in audits)
    assert {a.dest_ip for a in audits} >= {"127.0.0.1", "::1", "127.0.0.2"}
    assert any("written as 0.0.0.0" in a.message for a in audits)
    if effect == "prevent":
        assert set(got.values()) == {"111"}, got
        assert _settled(servers) == 0
    else:
        assert set(got.values()) == {"0"}, got
        assert _settled(servers) == len(FORMS)


def test_allow_list_naming_loopback_admits_its_other_forms(run_app, ns_call):
    port, _servers = _loopback_listeners(ns_call)
    rule = {"network": {"effect": "prevent", "outbound": {"allow": [f"127.0.0.1:{port}"]}}}
    r = run_app(rule, CONNECT_FORMS, str(port), "0.0.0.0", "::ffff:0.0.0.0", "127.0.0.1")
    assert set(dict(line.split() for line in r.out.splitlines()).values()) == {"0"}, r.out
    assert not r.audits


BOUND_THEN_UNSPECIFIED = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.bind((host, 0))
print(s.connect_ex(("0.0.0.0", port)))
"""


def test_unspecified_destination_of_a_bound_socket_is_its_source_address(run_app, ns_call):
    srv = ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{srv.port}"]}}}
    r = run_app(rule, BOUND_THEN_UNSPECIFIED, HOST4, str(srv.port))
    assert r.out.strip() == "111", (r.out, r.err)
    [a] = r.of("network")
    assert (a.dest_ip, a.dest_port, a.control) == (HOST4, srv.port, "network.outbound.deny")
    assert _settled([srv]) == 0


RAW_SENDS = """
import ctypes, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
variant, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
class iovec(ctypes.Structure): _fields_ = [("b", ctypes.c_void_p), ("l", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("n", ctypes.c_void_p), ("nl", ctypes.c_uint), ("iov", ctypes.POINTER(iovec)),
                ("iovl", ctypes.c_size_t), ("c", ctypes.c_void_p), ("cl", ctypes.c_size_t), ("f", ctypes.c_int)]
class mmsghdr(ctypes.Structure): _fields_ = [("h", msghdr), ("len", ctypes.c_uint)]
def sa(fam): return struct.pack("=H", fam) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)
name = ctypes.create_string_buffer(sa(2) + bytes(4096 - 16))   # a msg_namelen far above 128
payload = ctypes.create_string_buffer(b"exfil")
iov = iovec(ctypes.cast(payload, ctypes.c_void_p), 5)
def hdr(n, nl): return msghdr(ctypes.cast(n, ctypes.c_void_p), nl, ctypes.pointer(iov), 1, None, 0, 0)
if variant == "unspec-sendto":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rc = libc.sendto(u.fileno(), payload, 5, 0, ctypes.create_string_buffer(sa(0)), 16)
elif variant == "unspec-sendmsg":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    un = ctypes.create_string_buffer(sa(0)); m = hdr(un, 16)
    rc = libc.sendmsg(u.fileno(), ctypes.byref(m), 0)
elif variant == "long-sendmsg":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    m = hdr(name, 4096); rc = libc.sendmsg(u.fileno(), ctypes.byref(m), 0)
elif variant == "long-sendmmsg":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    vec = (mmsghdr * 1)(mmsghdr(hdr(name, 4096), 0)); rc = libc.sendmmsg(u.fileno(), vec, 1, 0)
elif variant == "long-fastopen-sendmsg":
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    m = hdr(name, 4096); rc = libc.sendmsg(t.fileno(), ctypes.byref(m), 0x20000000)
print(rc, ctypes.get_errno() if rc < 0 else 0)
"""

SEND_VARIANTS = ["unspec-sendto", "unspec-sendmsg", "long-sendmsg", "long-sendmmsg", "long-fastopen-sendmsg"]


@pytest.mark.parametrize("effect", ["prevent", "alert"])
@pytest.mark.parametrize("variant", SEND_VARIANTS)
def test_sends_read_what_the_kernel_reads(run_app, ns_call, variant, effect):
    tcp = variant.endswith("fastopen-sendmsg")
    srv = ns_call(lambda: TcpServer(HOST4)) if tcp else ns_call(lambda: UdpServer(HOST4))
    rule = {"network": {"effect": effect, "outbound": {"deny": [f"{HOST4}:{srv.port}"]}}}
    r = run_app(rule, RAW_SENDS, variant, HOST4, str(srv.port))
    rc, err = map(int, r.out.split())
    [a] = r.of("network")
    assert (a.dest_ip, a.dest_port, a.effect, a.protocol) == (
        HOST4,
        srv.port,
        effect,
        "tcp" if tcp else "udp",
    )
    if effect == "prevent":
        assert (rc, err) == (-1, 111 if tcp else 1), r.err
        assert (_settled([srv]) if tcp else len(srv.drain())) == 0
    else:
        assert rc in (1, 5) or (tcp and err == 115), (rc, err, r.err)  # TFO may answer EINPROGRESS
        if not tcp:
            time.sleep(0.1)
            assert srv.drain() == [b"exfil"]


FAMILY_FLIP = (
    FLIPPER
    + """
host, bad, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
unix = struct.pack("=H", 1) + b"/no-such-sock".ljust(14, b"\\0")   # AF_UNIX: passes by family
buf, stop = flipping(unix, sa(bad))
ok = 0
for i in range(n):
    s = socket.socket()
    if libc.connect(s.fileno(), buf, 16) == 0: ok += 1
    s.close()
stop()
print(ok)
"""
)


def test_racing_family_flip_cannot_smuggle_an_inet_address(run_app, ns_call):
    """A non-IP family used to be let through untouched (CONTINUE): a racing thread then swapped in a
    denied AF_INET address before the kernel read it. The guard now acts on the bytes it read."""
    bad = ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{bad.port}"]}}}
    r = run_app(rule, FAMILY_FLIP, HOST4, str(bad.port), "1000", timeout=300)
    assert r.rc == 0, r.err
    assert _settled([bad]) == 0 and r.out.strip() == "0"


NAME_FLIP = """
import ctypes, socket, struct, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
host, ok, bad, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
class iovec(ctypes.Structure): _fields_ = [("b", ctypes.c_void_p), ("l", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("n", ctypes.c_void_p), ("nl", ctypes.c_uint), ("iov", ctypes.POINTER(iovec)),
                ("iovl", ctypes.c_size_t), ("c", ctypes.c_void_p), ("cl", ctypes.c_size_t), ("f", ctypes.c_int)]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect((host, ok))
name = ctypes.create_string_buffer(struct.pack("=H", 2) + struct.pack("!H", bad) + socket.inet_aton(host) + bytes(8))
payload = ctypes.create_string_buffer(b"d"); iov = iovec(ctypes.cast(payload, ctypes.c_void_p), 1)
m = msghdr(None, 0, ctypes.pointer(iov), 1, None, 0, 0)     # no address: the connected peer
addr = ctypes.cast(name, ctypes.c_void_p).value
stop = threading.Event()
def flip():
    while not stop.is_set():
        m.n = addr; m.nl = 16; m.n = None; m.nl = 0
t = threading.Thread(target=flip); t.start()
for i in range(n): libc.sendmsg(u.fileno(), ctypes.byref(m), 0)
stop.set(); t.join()
print("done")
"""


def test_racing_thread_cannot_add_a_denied_name_to_a_connected_send(run_app, ns_call):
    ok, bad = ns_call(lambda: UdpServer(HOST4)), ns_call(lambda: UdpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{bad.port}"]}}}
    r = run_app(rule, NAME_FLIP, HOST4, str(ok.port), str(bad.port), "1000", timeout=300)
    assert r.out.strip() == "done", r.err
    time.sleep(0.2)
    got_ok, got_bad = ok.drain(), bad.drain()
    assert got_bad == [], f"{len(got_bad)} datagrams reached the denied port"
    assert got_ok, "the allowed sends did not arrive"


PKTINFO = """
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
info = struct.pack("=i4s4s", 0, socket.inet_aton(host), bytes(4))  # in_pktinfo: ifindex, spec_dst, addr
IP_PKTINFO = 8
try: print(u.sendmsg([b"viapktinfo"], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, ("0.0.0.0", port)))
except OSError as e: print(-e.errno)
"""


@pytest.mark.parametrize("effect", ["prevent", "alert"])
def test_unspecified_destination_with_ip_pktinfo_source(run_app, ns_call, effect):
    """sendmsg to 0.0.0.0 with IP_PKTINFO's ipi_spec_dst = X goes to X (the kernel routes an
    unspecified destination to the source address): decided as X."""
    srv = ns_call(lambda: UdpServer(HOST4))
    rule = {"network": {"effect": effect, "outbound": {"deny": [f"{HOST4}:{srv.port}"]}}}
    r = run_app(rule, PKTINFO, HOST4, str(srv.port))
    [a] = r.of("network")
    assert (a.dest_ip, a.dest_port, a.effect) == (HOST4, srv.port, effect), r.err
    time.sleep(0.1)
    if effect == "prevent":
        assert r.out.strip() == "-1" and srv.drain() == []
    else:
        assert r.out.strip() == "10" and srv.drain() == [b"viapktinfo"]
