"""The normalisation table (garrison.defender.net.normalise): each row as a pure case, and the kernel
facts behind the rows checked on this kernel over loopback (no supervisor involved)."""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import socket
import struct
from collections.abc import Iterator

import pytest

from garrison.defender.net.normalise import Kind, normalise, read_length

AF4, AF6, UNSPEC = int(socket.AF_INET), int(socket.AF_INET6), 0
STREAM, DGRAM = int(socket.SOCK_STREAM), int(socket.SOCK_DGRAM)
ip = ipaddress.ip_address


def sin(addr: str, port: int, family: int = AF4) -> bytes:
    return struct.pack("=H", family) + struct.pack("!H", port) + socket.inet_aton(addr) + bytes(8)


def sin6(addr: str, port: int, scope: int = 0) -> bytes:
    return (
        struct.pack("=H", AF6)
        + struct.pack("!HI", port, 0)
        + socket.inet_pton(AF6, addr)
        + struct.pack("=I", scope)
    )


@pytest.mark.parametrize(
    ("raw", "sf", "dest", "also"),
    [
        (sin("0.0.0.0", 80), AF4, "127.0.0.1", {"127.0.0.1", "::1"}),
        (sin6("::", 80), AF6, "::1", {"127.0.0.1", "::1"}),
        (sin6("::ffff:0.0.0.0", 80), AF6, "127.0.0.1", {"127.0.0.1", "::1"}),
        (sin6("::ffff:127.0.0.1", 80), AF6, "127.0.0.1", {"127.0.0.1", "::1"}),
        (sin6("::ffff:10.1.2.3", 80), AF6, "10.1.2.3", {"10.1.2.3"}),
        (sin("127.4.5.6", 80), AF4, "127.4.5.6", {"127.4.5.6", "127.0.0.1", "::1"}),
        (sin6("::1", 80), AF6, "::1", {"::1", "127.0.0.1"}),
        (sin6("::10.1.2.3", 80), AF6, "10.1.2.3", {"10.1.2.3", "::a01:203"}),
        (sin6("::127.0.0.1", 80), AF6, "127.0.0.1", {"127.0.0.1", "::1", "::7f00:1"}),
        (sin6("64:ff9b::10.1.2.3", 80), AF6, "64:ff9b::a01:203", {"64:ff9b::a01:203", "10.1.2.3"}),
        (sin6("2002:a01:203::1", 80), AF6, "2002:a01:203::1", {"2002:a01:203::1", "10.1.2.3"}),
        (sin6("2001:db8::1", 80), AF6, "2001:db8::1", {"2001:db8::1"}),
        (sin("0.1.2.3", 80), AF4, "0.1.2.3", {"0.1.2.3"}),  # 0/8 is unicast since Linux 5.3
        (sin("10.1.2.3", 80), None, "10.1.2.3", {"10.1.2.3"}),
    ],
)
def test_connect_destinations(raw: bytes, sf: int | None, dest: str, also: set[str]) -> None:
    r = normalise(raw, call="connect", sock_family=sf, sock_type=STREAM)
    assert r.kind is Kind.DEST and r.port == 80
    assert str(r.ip) == dest
    assert {str(a) for a in r.candidates} == also | {dest}


def test_unspecified_goes_to_the_bound_source_address() -> None:
    r = normalise(sin("0.0.0.0", 80), call="connect", sock_family=AF4, sock_type=STREAM, local=ip("10.9.9.9"))
    assert str(r.ip) == "10.9.9.9" and not r.needs_local
    assert normalise(sin("0.0.0.0", 80), call="connect", sock_family=AF4, sock_type=STREAM).needs_local
    mapped = ip("::ffff:10.9.9.9")
    r6 = normalise(
        sin6("::ffff:0.0.0.0", 80), call="connect", sock_family=AF6, sock_type=STREAM, local=mapped
    )
    assert str(r6.ip) == "10.9.9.9"
    # [::] on a socket bound to a v4-mapped address: ::ffff:127.0.0.1 (tcp_v6_connect)
    r6 = normalise(sin6("::", 80), call="connect", sock_family=AF6, sock_type=STREAM, local=mapped)
    assert str(r6.ip) == "127.0.0.1" and r6.family == AF4


def test_af_unspec_rows() -> None:
    unspec = sin("10.1.2.3", 53, UNSPEC)
    assert normalise(unspec, call="connect", sock_family=AF4, sock_type=DGRAM).kind is Kind.NONE
    r = normalise(unspec, call="sendmsg", sock_family=AF4, sock_type=DGRAM)
    assert r.kind is Kind.DEST and str(r.ip) == "10.1.2.3" and r.port == 53
    r = normalise(unspec, call="sendto", sock_family=None, sock_type=None)  # unknown socket: strict
    assert r.kind is Kind.DEST and str(r.ip) == "10.1.2.3"
    assert normalise(unspec, call="sendmsg", sock_family=AF6, sock_type=DGRAM).kind is Kind.NONE
    b = normalise(sin("0.0.0.0", 22, UNSPEC), call="bind", sock_family=AF4, sock_type=STREAM)
    assert b.kind is Kind.DEST and b.port == 22
    bad = normalise(unspec, call="bind", sock_family=AF4, sock_type=STREAM)
    assert (bad.kind, bad.errno) == (Kind.ERROR, errno.EAFNOSUPPORT)


def test_family_and_length_rows() -> None:
    def err(raw: bytes, sf: int | None, typ: int | None = STREAM, call: str = "connect") -> int:
        r = normalise(raw, call=call, sock_family=sf, sock_type=typ)  # type: ignore[arg-type]
        return r.errno if r.kind is Kind.ERROR else -1

    assert err(b"\x02", AF4) == errno.EINVAL
    assert err(sin("10.0.0.1", 1)[:15], AF4) == errno.EINVAL
    assert err(sin6("::1", 1)[:23], AF6) == errno.EINVAL
    assert err(sin6("::1", 1), AF4) == errno.EAFNOSUPPORT
    assert err(sin("10.0.0.1", 1), AF6) == errno.EAFNOSUPPORT  # TCPv6 refuses AF_INET
    assert err(sin("10.0.0.1", 1), AF6, call="bind") == errno.EAFNOSUPPORT
    unix = struct.pack("=H", socket.AF_UNIX) + b"/tmp/x\0"
    assert err(unix, AF4) == errno.EAFNOSUPPORT
    assert normalise(unix, call="connect", sock_family=None, sock_type=None).kind is Kind.FOREIGN
    assert (
        normalise(unix, call="connect", sock_family=int(socket.AF_UNIX), sock_type=STREAM).kind is Kind.NONE
    )
    # a v6 datagram socket sends an AF_INET address as IPv4
    r = normalise(sin("10.0.0.1", 9), call="sendmsg", sock_family=AF6, sock_type=DGRAM)
    assert r.kind is Kind.DEST and str(r.ip) == "10.0.0.1"
    # sockaddr_in6 without a scope id (24 bytes) is accepted; the scope id is kept when present
    assert (
        normalise(sin6("fe80::1", 9)[:24], call="connect", sock_family=AF6, sock_type=STREAM).kind
        is Kind.DEST
    )
    assert normalise(sin6("fe80::1", 9, 7), call="connect", sock_family=AF6, sock_type=STREAM).scope_id == 7


def test_read_length_clamps_sendmsg_only() -> None:
    assert read_length("sendmsg", 4096) == 128
    assert read_length("sendto", 4096) is None
    assert read_length("connect", 129) is None
    assert read_length("bind", 128) == 128
    assert read_length("sendmsg", 0xFFFFFFFF) is None  # negative int
    assert read_length("sendmsg", 16) == 16


# -- the kernel facts behind the rows, on this kernel, over loopback ---------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture
def listeners() -> Iterator[tuple[int, socket.socket, socket.socket]]:
    v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    v4.bind(("127.0.0.1", 0))
    port = v4.getsockname()[1]
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        v6.bind(("::1", port))
    except OSError:
        pytest.skip("no IPv6 loopback")
    v4.listen(8)
    v6.listen(8)
    yield port, v4, v6
    v4.close()
    v6.close()


@pytest.mark.parametrize(
    ("family", "written", "reaches"),
    [
        (AF4, "0.0.0.0", "v4"),
        (AF6, "::", "v6"),
        (AF6, "::ffff:0.0.0.0", "v4"),
        (AF6, "::ffff:127.0.0.1", "v4"),
    ],
)
def test_kernel_routes_unspecified_and_mapped_to_loopback(listeners, family, written, reaches) -> None:
    port, v4, v6 = listeners
    c = socket.socket(family, socket.SOCK_STREAM)
    assert c.connect_ex((written, port)) == 0
    srv = v4 if reaches == "v4" else v6
    srv.settimeout(5)
    conn, _ = srv.accept()
    conn.close()
    c.close()
    r = normalise(
        sin(written, port) if family == AF4 else sin6(written, port),
        call="connect",
        sock_family=family,
        sock_type=STREAM,
    )
    assert r.ip is not None and r.ip.is_loopback and (r.ip.version == 4) == (reaches == "v4")


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint),
        ("iov", ctypes.POINTER(_IoVec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


def test_kernel_sends_af_unspec_as_af_inet_and_clamps_msg_namelen() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    port = rx.getsockname()[1]
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unspec = ctypes.create_string_buffer(sin("127.0.0.1", port, UNSPEC))
    assert _libc.sendto(tx.fileno(), b"unspec", 6, 0, unspec, 16) == 6
    assert rx.recv(64) == b"unspec"
    big = ctypes.create_string_buffer(sin("127.0.0.1", port) + bytes(4096))
    assert _libc.sendto(tx.fileno(), b"x", 1, 0, big, 4096) == -1 and ctypes.get_errno() == errno.EINVAL
    data = ctypes.create_string_buffer(b"clamped")
    iov = _IoVec(ctypes.cast(data, ctypes.c_void_p), 7)
    msg = _MsgHdr(ctypes.cast(big, ctypes.c_void_p), 4096, ctypes.pointer(iov), 1, None, 0, 0)
    assert _libc.sendmsg(tx.fileno(), ctypes.byref(msg), 0) == 7
    assert rx.recv(64) == b"clamped"
    b = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    unspec_any = ctypes.create_string_buffer(sin("0.0.0.0", 0, UNSPEC))
    assert _libc.bind(b.fileno(), unspec_any, 16) == 0 and b.getsockname()[1] != 0
    for s in (rx, tx, b):
        s.close()


def test_pktinfo_source() -> None:
    from garrison.defender.net.normalise import pktinfo_source

    info = struct.pack("=i4s4s", 0, socket.inet_aton("10.9.9.9"), bytes(4))
    cmsg = struct.pack("=QII", 16 + len(info), socket.IPPROTO_IP, 8) + info + bytes(4)
    tos = struct.pack("=QII", 20, socket.IPPROTO_IP, socket.IP_TOS) + bytes(4) + bytes(4)
    assert str(pktinfo_source(tos + cmsg)) == "10.9.9.9"
    assert pktinfo_source(tos) is None and pktinfo_source(b"") is None
    zero = struct.pack("=QII", 28, socket.IPPROTO_IP, 8) + bytes(12)
    assert pktinfo_source(zero) is None
