"""Issue 9, item 1 through the full defender in its three modes (root, unprivileged user, that user
under the Garden-like filter): address forms the kernel routes to a denied destination are refused
(prevent) and audited (alert and prevent). Loopback only (127.0.0.1, 127.0.0.2, ::1)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.defender.helpers import Sandbox, rule, unpriv_python

FORMS = ["0.0.0.0", "::", "::ffff:0.0.0.0", "::ffff:127.0.0.1", "127.0.0.2", "::1"]


class _Listeners:
    """TCP listeners on one port at 127.0.0.1, 127.0.0.2 and ::1, plus a UDP socket on 127.0.0.1."""

    def __init__(self) -> None:
        if not socket.has_ipv6:
            pytest.skip("no IPv6 loopback")
        for _ in range(20):  # the same port free on all three addresses and for UDP (others run tests)
            socks = [socket.socket(), socket.socket(), socket.socket(socket.AF_INET6)]
            socks[2].setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                socks[0].bind(("127.0.0.1", 0))
                self.port = socks[0].getsockname()[1]
                socks[1].bind(("127.0.0.2", self.port))
                socks[2].bind(("::1", self.port))
                udp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                for s in [*socks, udp]:
                    s.close()
        else:
            pytest.skip("no port free on 127.0.0.1, 127.0.0.2 and ::1 at once")
        self.tcp = socks
        for s in self.tcp:
            s.listen(64)
            s.setblocking(False)
        self.udp = udp
        self.udp.setblocking(False)

    def accepted(self) -> int:
        n = 0
        time.sleep(0.2)
        for s in self.tcp:
            while True:
                try:
                    conn, _ = s.accept()
                except BlockingIOError:
                    break
                conn.close()
                n += 1
        return n

    def datagrams(self) -> list[bytes]:
        time.sleep(0.1)
        out = []
        while True:
            try:
                out.append(self.udp.recv(4096))
            except BlockingIOError:
                return out

    def close(self) -> None:
        for s in [*self.tcp, self.udp]:
            s.close()


@pytest.fixture
def listeners() -> Iterator[_Listeners]:
    ls = _Listeners()
    yield ls
    ls.close()


CONNECT_FORMS = """
import socket, sys
port = int(sys.argv[1])
for host in sys.argv[2:]:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    print(host, s.connect_ex((host, port)))
    s.close()
"""


@pytest.mark.parametrize("effect", ["alert", "prevent"])
def test_loopback_forms_of_a_denied_destination(sandbox: Sandbox, mode3: str, effect: str, listeners) -> None:
    py, _ = unpriv_python()
    sandbox.write("app.py", CONNECT_FORMS, mode=0o644)
    pol = rule(network={"effect": effect, "outbound": {"deny": [f"127.0.0.1:{listeners.port}"]}})
    r = sandbox.run(pol, [py, "app.py", str(listeners.port), *FORMS], mode=mode3)
    assert r.returncode == 0, r.stderr
    got = dict(line.split() for line in r.stdout.splitlines())
    assert set(got) == set(FORMS), r.stdout
    hits = r.of("network", "network.outbound.deny")
    assert len(hits) == len(FORMS) and {h["effect"] for h in hits} == {effect}, hits
    assert {h["dest_ip"] for h in hits} >= {"127.0.0.1", "127.0.0.2", "::1"}
    if effect == "prevent":
        assert set(got.values()) == {"111"}, got
        assert listeners.accepted() == 0
    else:
        assert set(got.values()) == {"0"}, got
        assert listeners.accepted() == len(FORMS)


SENDS = """
import ctypes, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
port = int(sys.argv[1])
class iovec(ctypes.Structure): _fields_ = [("b", ctypes.c_void_p), ("l", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("n", ctypes.c_void_p), ("nl", ctypes.c_uint), ("iov", ctypes.POINTER(iovec)),
                ("iovl", ctypes.c_size_t), ("c", ctypes.c_void_p), ("cl", ctypes.c_size_t), ("f", ctypes.c_int)]
class mmsghdr(ctypes.Structure): _fields_ = [("h", msghdr), ("len", ctypes.c_uint)]
def sa(fam, host="127.0.0.1"): return struct.pack("=H", fam) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)
payload = ctypes.create_string_buffer(b"exfil")
iov = iovec(ctypes.cast(payload, ctypes.c_void_p), 5)
def hdr(n, nl): return msghdr(ctypes.cast(n, ctypes.c_void_p), nl, ctypes.pointer(iov), 1, None, 0, 0)
long_name = ctypes.create_string_buffer(sa(2) + bytes(4096 - 16))      # msg_namelen > 128: clamped
for variant in sys.argv[2:]:
    if variant == "unspec-sendto":         # AF_UNSPEC on an AF_INET socket is sent as AF_INET
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rc = libc.sendto(u.fileno(), payload, 5, 0, ctypes.create_string_buffer(sa(0)), 16)
    elif variant == "long-sendmsg":
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        m = hdr(long_name, 4096); rc = libc.sendmsg(u.fileno(), ctypes.byref(m), 0)
    elif variant == "long-sendmmsg":
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        vec = (mmsghdr * 1)(mmsghdr(hdr(long_name, 4096), 0)); rc = libc.sendmmsg(u.fileno(), vec, 1, 0)
    elif variant == "mapped-any-sendto":   # ::ffff:0.0.0.0 from an IPv6 datagram socket: loopback
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try: rc = u.sendto(b"exfil", ("::ffff:0.0.0.0", port))
        except OSError as e: rc = -1; ctypes.set_errno(e.errno)
    elif variant == "long-fastopen-sendmsg":
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        m = hdr(long_name, 4096); rc = libc.sendmsg(t.fileno(), ctypes.byref(m), 0x20000000)
    print(variant, rc, ctypes.get_errno() if rc < 0 else 0, flush=True)
"""

UDP_VARIANTS = ["unspec-sendto", "long-sendmsg", "long-sendmmsg", "mapped-any-sendto"]
SEND_VARIANTS = [*UDP_VARIANTS, "long-fastopen-sendmsg"]


def _run_sends(sandbox: Sandbox, mode: str, effect: str, port: int, variants: list[str]):
    py, _ = unpriv_python()
    sandbox.write("app.py", SENDS, mode=0o644)
    pol = rule(network={"effect": effect, "outbound": {"deny": [f"127.0.0.1:{port}"]}})
    r = sandbox.run(pol, [py, "app.py", str(port), *variants], mode=mode)
    assert r.returncode == 0, r.stderr
    got = {v: (int(rc), int(err)) for v, rc, err in (line.split() for line in r.stdout.splitlines())}
    assert set(got) == set(variants), r.stdout
    return r, got


@pytest.mark.parametrize("variant", SEND_VARIANTS)
def test_sends_are_refused_where_the_kernel_would_send(
    sandbox: Sandbox, mode3: str, variant: str, listeners
) -> None:
    r, got = _run_sends(sandbox, mode3, "prevent", listeners.port, [variant])
    tcp = variant.endswith("fastopen-sendmsg")
    assert got[variant] == (-1, 111 if tcp else 1), (got, r.stderr)
    [hit] = r.of("network", "network.outbound.deny")
    assert (hit["dest_ip"], hit["dest_port"], hit["effect"]) == ("127.0.0.1", listeners.port, "prevent")
    assert hit["protocol"] == ("tcp" if tcp else "udp")
    assert listeners.datagrams() == [] and listeners.accepted() == 0


def test_sends_are_audited_under_alert(sandbox: Sandbox, mode3: str, listeners) -> None:
    r, got = _run_sends(sandbox, mode3, "alert", listeners.port, UDP_VARIANTS)
    assert all(rc == (1 if v.endswith("sendmmsg") else 5) for v, (rc, _) in got.items()), got
    hits = r.of("network", "network.outbound.deny")
    assert len(hits) == len(UDP_VARIANTS) and {h["effect"] for h in hits} == {"alert"}
    assert listeners.datagrams() == [b"exfil"] * len(UDP_VARIANTS)
