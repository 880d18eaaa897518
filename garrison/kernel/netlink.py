"""Netlink framing shared by the netlink users (NFLOG, the proc connector): the message header and
draining a non-blocking socket message by message."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

NLMSG = struct.Struct("=IHHII")  # length, type, flags, seq, pid


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
