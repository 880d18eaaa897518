"""NFLOG over netlink (nfnetlink_log): the packets an nftables `log group N` statement hands to user
space, read from a socket opened inside a chosen network namespace. Mechanism only."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from garrison.kernel.netlink import NLMSG, attrs, drain
from garrison.kernel.netlink import attr as _attr
from garrison.kernel.netns import socket_in_netns

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2

_NFGEN = struct.Struct("=BBH")



@dataclass(frozen=True)
class LoggedPacket:
    prefix: str
    family: int
    dst: str
    proto: int  # IPPROTO_*
    dport: int | None


def _config(group: int, attrs: bytes, seq: int) -> bytes:
    body = _NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(group)) + attrs
    msg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return NLMSG.pack(NLMSG.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


class NflogSocket:
    """Bound to one NFLOG group in one network namespace; copies the first 128 bytes of each packet."""

    def __init__(self, group: int, netns: str | None = None) -> None:
        self.group = group
        self.sock = (socket_in_netns(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) if netns
                     else socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER))
        self.sock.bind((0, 0))
        self._request(_attr(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND)), 1)
        self._request(_attr(NFULA_CFG_MODE, struct.pack(">IBB", 128, NFULNL_COPY_PACKET, 0)), 2)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def _request(self, attrs: bytes, seq: int) -> None:
        self.sock.send(_config(self.group, attrs, seq))
        data = self.sock.recv(65536)
        _length, msg_type, _flags, _seq, _pid = NLMSG.unpack_from(data, 0)
        if msg_type == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, NLMSG.size)
            if err < 0:
                raise OSError(-err, f"nflog group {self.group}: {os.strerror(-err)}")

    def read(self) -> list[LoggedPacket]:
        packets = (_parse(body) for kind, body in drain(self.sock)
                   if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET)
        return [p for p in packets if p is not None]


def _parse(msg: bytes) -> LoggedPacket | None:
    family = msg[0]
    prefix, payload = "", b""
    for kind, value in attrs(msg, _NFGEN.size):
        if kind == NFULA_PREFIX:
            prefix = value.split(b"\0", 1)[0].decode(errors="replace")
        elif kind == NFULA_PAYLOAD:
            payload = value
    return _packet(prefix, family, payload)


def _packet(prefix: str, family: int, p: bytes) -> LoggedPacket | None:
    if family == socket.AF_INET and len(p) >= 20:
        ihl = (p[0] & 0x0F) * 4
        proto, dst, l4 = p[9], str(ipaddress.IPv4Address(p[16:20])), p[ihl:]
    elif family == socket.AF_INET6 and len(p) >= 40:
        proto, dst, l4 = p[6], str(ipaddress.IPv6Address(p[24:40])), p[40:]
    else:
        return None
    dport = struct.unpack_from(">H", l4, 2)[0] if proto in (6, 17) and len(l4) >= 4 else None
    return LoggedPacket(prefix=prefix, family=family, dst=dst, proto=proto, dport=dport)
