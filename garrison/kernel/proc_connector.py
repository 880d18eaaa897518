"""The proc connector (NETLINK_CONNECTOR, CN_IDX_PROC): fork, exec and exit of every process on the
host, as the kernel reports them (root only). Mechanism only: who the processes belong to is decided
elsewhere."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from dataclasses import dataclass

from garrison.kernel.netlink import NLMSG, drain

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_EXIT = 0x80000000
NLMSG_DONE = 3

_CN_MSG = struct.Struct("=IIIIHH")
_EVENT_HDR = struct.Struct("=IIQ")  # what, cpu, timestamp_ns


@dataclass(frozen=True)
class ProcEvent:
    kind: str  # fork | exec | exit
    pid: int  # the thread group (process) the event is about: child for fork
    ppid: int | None = None  # fork: the parent process
    exit_code: int | None = None
    timestamp_ns: int = 0  # when the kernel reported it, CLOCK_MONOTONIC


class ProcConnector:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)
        with contextlib.suppress(OSError):  # root: room for a burst of forks (a fork bomb) before ENOBUFS
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        self.sock.bind((os.getpid(), CN_IDX_PROC))
        self._control(PROC_CN_MCAST_LISTEN)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._control(PROC_CN_MCAST_IGNORE)
        self.sock.close()

    def _control(self, op: int) -> None:
        payload = struct.pack("=I", op)
        cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
        self.sock.send(NLMSG.pack(NLMSG.size + len(cn), NLMSG_DONE, 0, 0, os.getpid()) + cn)

    def read(self) -> list[ProcEvent]:
        events = (_parse(body[_CN_MSG.size :]) for _kind, body in drain(self.sock))
        return [e for e in events if e is not None]


def _parse(body: bytes) -> ProcEvent | None:
    if len(body) < _EVENT_HDR.size:
        return None
    what, _cpu, ts = _EVENT_HDR.unpack_from(body, 0)
    data = body[_EVENT_HDR.size :]
    if what == PROC_EVENT_FORK and len(data) >= 16:
        _ppid, ptgid, cpid, ctgid = struct.unpack_from("=iiii", data)
        if cpid != ctgid:
            return None  # a new thread, not a process
        return ProcEvent("fork", ctgid, ppid=ptgid, timestamp_ns=ts)
    if what == PROC_EVENT_EXEC and len(data) >= 8:
        _pid, tgid = struct.unpack_from("=ii", data)
        return ProcEvent("exec", tgid, timestamp_ns=ts)
    if what == PROC_EVENT_EXIT and len(data) >= 16:
        pid, tgid, code, _sig = struct.unpack_from("=iiII", data)
        if pid != tgid:
            return None
        return ProcEvent("exit", tgid, exit_code=code, timestamp_ns=ts)
    return None
