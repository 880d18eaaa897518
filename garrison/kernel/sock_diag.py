"""Listening sockets of a network namespace through NETLINK_SOCK_DIAG (inet_diag).

Why not /proc/<pid>/net/tcp: reading it walks the kernel's whole established-connection hash of
every namespace (~6 ms per table on this machine), so a second-by-second check of 250 containers
costs more than a core. A diag dump asking for LISTEN sockets only walks the listening hash, and
UDP's table is small. The socket answers for the namespace it was created in (see kernel/netns.py).
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from garrison.kernel.netlink import NLMSG

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
TCP_LISTEN = 10
TCP_CLOSE = 7  # a bound UDP socket with no peer

# inet_diag_req_v2: family, protocol, ext, pad, states, then an all-zero inet_diag_sockid (48 bytes)
_REQ = struct.Struct("=BBBBI48x")
# inet_diag_msg: family, state, timer, retrans, sport (BE), dport (BE), src[16], dst[16], ...
_MSG = struct.Struct("=BBBB2s2s16s16s")


def open_diag() -> socket.socket:
    """A sock_diag socket in the caller's network namespace."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)


def _dump(sock: socket.socket, family: int, protocol: int, state: int) -> list[tuple[int, str]]:
    """(port, local address) of each socket of `family`/`protocol` in `state`."""
    req = _REQ.pack(family, protocol, 0, 0, 1 << state)
    sock.send(NLMSG.pack(NLMSG.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 0, 0) + req)
    out: list[tuple[int, str]] = []
    while True:
        data = sock.recv(65536)
        off = 0
        while off + NLMSG.size <= len(data):
            length, msg_type, _flags, _seq, _pid = NLMSG.unpack_from(data, off)
            if length < NLMSG.size:
                return out
            if msg_type == NLMSG_DONE:
                return out
            if msg_type == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, off + NLMSG.size)
                if err:
                    raise OSError(-err, f"sock_diag dump (family {family}, protocol {protocol})")
                return out
            body = off + NLMSG.size
            fam, _st, _t, _r, sport, _dport, src, _dst = _MSG.unpack_from(data, body)
            raw = src[:4] if fam == socket.AF_INET else src
            out.append((int.from_bytes(sport, "big"), str(ipaddress.ip_address(raw))))
            off += (length + 3) & ~3


def listening(sock: socket.socket) -> list[tuple[str, int, str]]:
    """(protocol, port, local address) of every listening TCP socket and bound, unconnected UDP socket
    in the socket's namespace."""
    found: list[tuple[str, int, str]] = []
    for proto, ipproto, state in (("tcp", socket.IPPROTO_TCP, TCP_LISTEN), ("udp", socket.IPPROTO_UDP, TCP_CLOSE)):
        for family in (socket.AF_INET, socket.AF_INET6):
            found.extend((proto, port, addr) for port, addr in _dump(sock, family, ipproto, state))
    return found
