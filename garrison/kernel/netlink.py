"""Netlink framing shared by the netlink users (NFLOG, nftables sets, the proc connector): the message
header, attributes and draining a non-blocking socket message by message."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

NLMSG = struct.Struct("=IHHII")  # length, type, flags, seq, pid
_ATTR = struct.Struct("=HH")  # length, type


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def attrs(buf: bytes, off: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each netlink attribute in `buf` from `off` (nested/byte-order flags cleared)."""
    while off + _ATTR.size <= len(buf):
        length, kind = _ATTR.unpack_from(buf, off)
        if length < _ATTR.size:
            return
        yield kind & 0x3FFF, buf[off + _ATTR.size : off + length]
        off += (length + 3) & ~3


def drain(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    """(message type, payload) of every message queued on a non-blocking netlink socket."""
    while True:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        off = 0
        while off + NLMSG.size <= len(data):
            length, msg_type, _flags, _seq, _pid = NLMSG.unpack_from(data, off)
            if length < NLMSG.size:
                break
            yield msg_type, data[off + NLMSG.size : off + length]
            off += (length + 3) & ~3
