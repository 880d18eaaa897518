"""Where the kernel really sends a connect/sendto/sendmsg/sendmmsg/bind address: ONE pure function.

The guard decides on what `normalise` returns, never on the bytes as written: `0.0.0.0:P`, `[::]:P`
and `[::ffff:0.0.0.0]:P` reach a local listener on P, `::ffff:a.b.c.d` is sent as IPv4, a UDP
`sendto` with `sa_family = AF_UNSPEC` on an AF_INET socket is sent as AF_INET, and a `sendmsg`
`msg_namelen` above 128 is clamped by the kernel, not refused. The table below is the contract a
native data plane mirrors (docs/defender-network.md repeats it); every row was checked against
Linux 6.x (net/ipv4/af_inet.c, tcp_ipv4.c, udp.c, datagram.c, net/ipv6/tcp_ipv6.c, udp.c,
datagram.c, af_inet6.c, net/socket.c) and on this kernel (tests/defender/net/test_normalise.py).

No kernel calls here: input is the bytes read from the app, the length the app passed, the socket's
family/type (known from the fd or its `system.sockprotoname`; None = unknown), the call, and the
socket's bound local address when the caller knows it.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from enum import Enum
from typing import Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Call = Literal["connect", "sendto", "sendmsg", "bind"]  # sendmmsg messages are "sendmsg"

SOCKADDR_STORAGE = 128  # sizeof(struct sockaddr_storage)
SIN_LEN = 16  # sizeof(struct sockaddr_in)
SIN6_LEN_RFC2133 = 24  # sockaddr_in6 without sin6_scope_id: the kernel's minimum
SIN6_LEN = 28
AF_UNSPEC, AF_INET, AF_INET6 = 0, int(socket.AF_INET), int(socket.AF_INET6)
SOCK_STREAM = int(socket.SOCK_STREAM)

EINVAL, EAFNOSUPPORT = 22, 97

LOOPBACK4 = ipaddress.IPv4Address("127.0.0.1")
LOOPBACK6 = ipaddress.IPv6Address("::1")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


class Kind(Enum):
    DEST = "dest"  # an IP destination (or, for bind, a local address): decide it
    NONE = "none"  # the kernel uses no address (AF_UNSPEC connect = disconnect, v6 datagram AF_UNSPEC)
    ERROR = "error"  # the kernel refuses the call itself with `errno` (malformed, wrong family)
    FOREIGN = "foreign"  # not an IP family and the socket is unknown: the guard cannot tell


@dataclass(frozen=True)
class Routed:
    """The outcome for one address. For DEST: `ip`/`port`/`family` are where the kernel sends it
    (`family` AF_INET for v4-mapped), `also` are equivalent destinations that must be decided too
    (a deny of any of them covers this one), `written` is the address as the app wrote it."""

    kind: Kind
    ip: IPAddress | None = None
    port: int = 0
    family: int = 0
    also: tuple[IPAddress, ...] = ()
    written: str = ""
    errno: int = 0
    scope_id: int = 0
    needs_local: bool = False  # the result depends on the socket's bound address (not given)
    why: str = ""

    @property
    def candidates(self) -> tuple[IPAddress, ...]:
        return () if self.ip is None else (self.ip, *[a for a in self.also if a != self.ip])

    @property
    def shown(self) -> str:
        ip = self.ip
        return "" if ip is None else (f"[{ip}]:{self.port}" if ip.version == 6 else f"{ip}:{self.port}")


def read_length(call: Call, declared: int) -> int | None:
    """How many address bytes the kernel copies for `declared` (the app's addrlen/msg_namelen as
    the C int the kernel sees); None when it refuses the call (EINVAL) before reading any."""
    n = declared - (1 << 32) if declared >= 1 << 31 else declared
    if n < 0:
        return None
    if n > SOCKADDR_STORAGE:
        # sendmsg/sendmmsg clamp msg_namelen (__copy_msghdr); connect/bind/sendto refuse it
        # (move_addr_to_kernel)
        return SOCKADDR_STORAGE if call == "sendmsg" else None
    return n


def normalise(
    raw: bytes,
    *,
    call: Call,
    sock_family: int | None,
    sock_type: int | None,
    local: IPAddress | None = None,
) -> Routed:
    """Route `raw` (exactly the bytes the kernel reads: see `read_length`) as the kernel would.

    Rows (sf = socket family, None = unknown, which takes the stricter reading):
      length < 2 ....................................... ERROR EINVAL
      sf not AF_INET/AF_INET6/None ..................... NONE (not an IP socket)
      AF_UNSPEC, connect ............................... NONE (disconnect)
      AF_UNSPEC, send on sf AF_INET6 datagram .......... NONE (udpv6 drops the name)
      AF_UNSPEC, send on sf AF_INET or None ............ read as AF_INET (udp/raw_sendmsg)
      AF_UNSPEC, bind on sf AF_INET or None, 0.0.0.0 ... read as AF_INET (inet_bind compatibility)
      AF_UNSPEC, bind otherwise ........................ ERROR EAFNOSUPPORT
      AF_INET, length < 16 ............................. ERROR EINVAL
      AF_INET on sf AF_INET6: bind or stream ........... ERROR EAFNOSUPPORT (v6 datagram: sent as v4)
      AF_INET6 on sf AF_INET ........................... ERROR EAFNOSUPPORT
      AF_INET6, length < 24 ............................ ERROR EINVAL
      other family on sf AF_INET/AF_INET6 .............. ERROR EAFNOSUPPORT
      other family, sf unknown ......................... FOREIGN
    then destinations (not for bind, which keeps the address as written):
      0.0.0.0 ........ the source address (`local`: IP_PKTINFO's ipi_spec_dst, see pktinfo_source,
                       else the bound address), else 127.0.0.1 (ip_route_output: daddr = saddr)
      127.0.0.0/8 .... itself; loopback class
      :: ............. ::1, or 127.0.0.1 when bound to a v4-mapped address (tcp_v6_connect,
                       __ip6_datagram_connect, udpv6_sendmsg)
      ::1 ............ itself; loopback class
      ::ffff:a.b.c.d . a.b.c.d, then the IPv4 rows (::ffff:0.0.0.0 → local)
      ::a.b.c.d ...... a.b.c.d (IPv4-compatible: sit's automatic tunnel), ::a.b.c.d kept in `also`
      64:ff9b::a.b.c.d a.b.c.d in `also` (NAT64 gateways reach it)
      2002:AABB:CCDD:: AA.BB.CC.DD in `also` (6to4 relay)
      fe80::/10 ...... itself; sin6_scope_id recorded (it picks the interface, not the host)
    Loopback class: a destination on loopback also lists 127.0.0.1 and ::1, so a rule naming either
    covers every form (127.0.0.2, ::ffff:127.0.0.1, 0.0.0.0, ::, ...).
    """
    if len(raw) < 2:
        return Routed(Kind.ERROR, errno=EINVAL, why="address shorter than its family field")
    if sock_family is not None and sock_family not in (AF_INET, AF_INET6):
        return Routed(Kind.NONE, why="not an IP socket")
    fam = int(struct.unpack_from("=H", raw)[0])
    dgram_v6 = sock_family == AF_INET6 and sock_type is not None and sock_type != SOCK_STREAM
    if fam == AF_UNSPEC:
        if call == "connect":
            return Routed(Kind.NONE, why="AF_UNSPEC connect disconnects")
        if call == "bind":
            if sock_family == AF_INET6 or len(raw) < SIN_LEN or raw[4:8] != bytes(4):
                return Routed(Kind.ERROR, errno=EAFNOSUPPORT, why="AF_UNSPEC bind of a non-any address")
        elif dgram_v6 or (sock_family == AF_INET6 and sock_type is None):
            return Routed(Kind.NONE, why="AF_UNSPEC name on an IPv6 datagram socket is ignored")
        fam = AF_INET  # the kernel reads it as sockaddr_in
    if fam == AF_INET:
        if len(raw) < SIN_LEN:
            return Routed(Kind.ERROR, errno=EINVAL, why="sockaddr_in too short")
        if sock_family == AF_INET6 and (call == "bind" or sock_type == SOCK_STREAM):
            return Routed(Kind.ERROR, errno=EAFNOSUPPORT, why="AF_INET address on an IPv6 socket")
        port = int(struct.unpack_from("!H", raw, 2)[0])
        ip4 = ipaddress.IPv4Address(raw[4:8])
        written = f"{ip4}:{port}"
        if call == "bind":
            return Routed(Kind.DEST, ip4, port, AF_INET, written=written)
        return _route_v4(ip4, port, written, local)
    if fam == AF_INET6:
        if sock_family == AF_INET:
            return Routed(Kind.ERROR, errno=EAFNOSUPPORT, why="AF_INET6 address on an IPv4 socket")
        if len(raw) < SIN6_LEN_RFC2133:
            return Routed(Kind.ERROR, errno=EINVAL, why="sockaddr_in6 too short")
        port = int(struct.unpack_from("!H", raw, 2)[0])
        ip6 = ipaddress.IPv6Address(raw[8:24])
        scope = int(struct.unpack_from("=I", raw, 24)[0]) if len(raw) >= SIN6_LEN else 0
        written = f"[{ip6}]:{port}"
        if call == "bind":
            return Routed(Kind.DEST, ip6.ipv4_mapped or ip6, port, AF_INET6, written=written, scope_id=scope)
        return _route_v6(ip6, port, written, scope, local)
    if sock_family is None:
        return Routed(Kind.FOREIGN, why=f"address family {fam} on a socket of unknown family")
    return Routed(Kind.ERROR, errno=EAFNOSUPPORT, why=f"address family {fam} on an IP socket")


def _loopback_class(ip: IPAddress) -> tuple[IPAddress, ...]:
    return (LOOPBACK4, LOOPBACK6) if ip.is_loopback else ()


def _route_v4(ip: ipaddress.IPv4Address, port: int, written: str, local: IPAddress | None) -> Routed:
    if int(ip) == 0:
        src = local.ipv4_mapped if isinstance(local, ipaddress.IPv6Address) else local
        if src is not None and int(src) != 0:
            dest: IPAddress = src
            why = "unspecified destination goes to the bound source address"
        else:
            dest, why = LOOPBACK4, "unspecified destination goes to loopback"
        return Routed(
            Kind.DEST, dest, port, AF_INET, (LOOPBACK4, LOOPBACK6), written,
            needs_local=local is None, why=why,
        )  # fmt: skip
    return Routed(Kind.DEST, ip, port, AF_INET, _loopback_class(ip), written)


def _route_v6(
    ip: ipaddress.IPv6Address, port: int, written: str, scope: int, local: IPAddress | None
) -> Routed:
    mapped = ip.ipv4_mapped
    if mapped is not None:
        r = _route_v4(mapped, port, written, local)
        return Routed(
            r.kind, r.ip, port, AF_INET, r.also, written, scope_id=scope,
            needs_local=r.needs_local, why=r.why or "IPv4-mapped: sent as IPv4",
        )  # fmt: skip
    if int(ip) == 0:
        v4_bound = isinstance(local, ipaddress.IPv6Address) and local.ipv4_mapped is not None
        dest: IPAddress = LOOPBACK4 if v4_bound else LOOPBACK6
        return Routed(
            Kind.DEST, dest, port, AF_INET if v4_bound else AF_INET6, (LOOPBACK4, LOOPBACK6), written,
            scope_id=scope, needs_local=local is None, why="unspecified destination goes to loopback",
        )  # fmt: skip
    if ip == LOOPBACK6:
        return Routed(Kind.DEST, ip, port, AF_INET6, (LOOPBACK4,), written, scope_id=scope)
    if int(ip) >> 32 == 0:  # ::a.b.c.d, IPv4-compatible (deprecated; sit tunnels it to a.b.c.d)
        v4 = _route_v4(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), port, written, local)
        return Routed(
            Kind.DEST, v4.ip, port, AF_INET6, (*v4.also, ip), written, scope_id=scope,
            needs_local=v4.needs_local, why="IPv4-compatible address reaches the IPv4 host",
        )  # fmt: skip
    tunnelled = None
    if ip in _NAT64:
        tunnelled = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    elif ip in _SIX_TO_FOUR:
        tunnelled = ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)
    if tunnelled is not None:
        also = (tunnelled, *_loopback_class(tunnelled))
        return Routed(Kind.DEST, ip, port, AF_INET6, also, written, scope_id=scope, why="reaches IPv4 host")
    return Routed(Kind.DEST, ip, port, AF_INET6, (), written, scope_id=scope)


def pktinfo_source(control: bytes) -> ipaddress.IPv4Address | None:
    """The source address an IPv4 `IP_PKTINFO` control message picks (`ipi_spec_dst`, as
    ip_cmsg_send reads it), None when there is none. An unspecified destination is routed to the
    source address, so for `0.0.0.0` this is the destination (a row of the table)."""
    off = 0
    while off + 16 <= len(control):
        clen, level, ctype = struct.unpack_from("=QII", control, off)
        if clen < 16 or off + clen > len(control):
            return None
        if level == 0 and ctype == 8 and clen >= 16 + 12:  # SOL_IP, IP_PKTINFO: struct in_pktinfo
            spec = ipaddress.IPv4Address(control[off + 20 : off + 24])
            return spec if int(spec) else None
        off += (clen + 7) & ~7
    return None
