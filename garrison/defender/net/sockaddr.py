"""Decode sockaddr / msghdr / mmsghdr structures copied out of the app's memory.

Pure functions over bytes so they are testable without a kernel; the handlers read the bytes once
and decide (and, when emulating, act) on that single copy.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_SOCKADDR = 128  # sizeof(struct sockaddr_storage)
MSGHDR = struct.Struct("=QI4xQQQQi4x")  # name, namelen, iov, iovlen, control, controllen, flags
MMSGHDR_SIZE = MSGHDR.size + 8  # struct msghdr + unsigned msg_len (+ padding)
IOVEC = struct.Struct("=QQ")


class BadSockaddr(ValueError):
    """The address is malformed: the kernel would refuse it too (EINVAL), so the app may try."""


@dataclass(frozen=True)
class InetAddr:
    """An IPv4/IPv6 destination; `ip` is the IPv4 address for v4-mapped IPv6 destinations."""

    family: int
    ip: IPAddress
    port: int
    raw: bytes

    @property
    def shown(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"


def family_of(raw: bytes) -> int:
    if len(raw) < 2:
        raise BadSockaddr("sockaddr shorter than its family field")
    return int(struct.unpack_from("=H", raw)[0])


def decode_inet(raw: bytes) -> InetAddr | None:
    """An InetAddr for AF_INET/AF_INET6, None for any other family (unix, netlink, unspec…)."""
    fam = family_of(raw)
    if fam == socket.AF_INET:
        if len(raw) < 16:
            raise BadSockaddr("sockaddr_in too short")
        port = struct.unpack_from("!H", raw, 2)[0]
        return InetAddr(fam, ipaddress.IPv4Address(raw[4:8]), port, raw[:16])
    if fam == socket.AF_INET6:
        if len(raw) < 24:
            raise BadSockaddr("sockaddr_in6 too short")
        port = struct.unpack_from("!H", raw, 2)[0]
        ip6 = ipaddress.IPv6Address(raw[8:24])
        ip: IPAddress = ip6.ipv4_mapped or ip6
        return InetAddr(fam, ip, port, raw[:28])
    return None


def inet_sockaddr(ip: IPAddress, port: int, family: int) -> bytes:
    """Build a sockaddr for `family` (v4 addresses become v4-mapped on AF_INET6 sockets)."""
    if family == socket.AF_INET6:
        packed = ipaddress.IPv6Address(f"::ffff:{ip}").packed if ip.version == 4 else ip.packed
        return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0) + packed + b"\0" * 4
    if ip.version != 4:
        raise BadSockaddr("IPv6 destination on an AF_INET socket")
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + ip.packed + b"\0" * 8


@dataclass(frozen=True)
class MsgHdr:
    name_ptr: int
    name_len: int
    iov_ptr: int
    iov_len: int
    control_ptr: int
    control_len: int


def decode_msghdr(raw: bytes) -> MsgHdr:
    name, namelen, iov, iovlen, control, controllen, _flags = MSGHDR.unpack_from(raw)
    return MsgHdr(name, namelen, iov, iovlen, control, controllen)


def decode_iovecs(raw: bytes, count: int) -> list[tuple[int, int]]:
    return [IOVEC.unpack_from(raw, i * IOVEC.size) for i in range(count)]
