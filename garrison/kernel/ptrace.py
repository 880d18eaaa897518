"""ptrace for the exec stop (Garden containers, where Landlock is blocked): the tracee stops right
after execve replaced its image and before it runs an instruction of it."""

from __future__ import annotations

import ctypes
import os

from garrison.kernel._libc import check, libc

PTRACE_CONT = 7
PTRACE_GETEVENTMSG = 0x4201
PTRACE_SEIZE = 0x4206
PTRACE_LISTEN = 0x4208

O_TRACEFORK = 0x02
O_TRACEVFORK = 0x04
O_TRACECLONE = 0x08
O_TRACEEXEC = 0x10
O_EXITKILL = 0x100000

EVENT_FORK = 1
EVENT_VFORK = 2
EVENT_CLONE = 3
EVENT_EXEC = 4
EVENT_STOP = 128

WALL = 0x40000000  # __WALL: threads and non-children too

libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long

EXEC_TRACE_OPTIONS = O_TRACEFORK | O_TRACEVFORK | O_TRACECLONE | O_TRACEEXEC | O_EXITKILL


def _pt(req: int, pid: int, addr: int = 0, data: int = 0) -> int:
    return check(int(libc.ptrace(req, pid, addr or None, data or None)), f"ptrace({req:#x}, {pid})")


def seize(pid: int, options: int = EXEC_TRACE_OPTIONS) -> None:
    """Attach without stopping; EXITKILL makes every tracee die with the tracer (fail-closed)."""
    _pt(PTRACE_SEIZE, pid, 0, options)


def geteventmsg(pid: int) -> int:
    """The event's message: the new child's pid at a fork/vfork/clone stop."""
    msg = ctypes.c_ulong(0)
    _pt(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(msg))
    return int(msg.value)


def cont(pid: int, sig: int = 0) -> None:
    _pt(PTRACE_CONT, pid, 0, sig)


def listen(pid: int) -> None:
    _pt(PTRACE_LISTEN, pid)


def event_of(status: int) -> int:
    return (status >> 16) & 0xFFFF


def wait_any() -> tuple[int, int]:
    """waitpid(-1, __WALL): tracee stops and exits of every child and tracee."""
    return os.waitpid(-1, WALL)


def available() -> bool:
    """Can we PTRACE_SEIZE a child of ours? (Some container profiles block ptrace.)"""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    try:
        seize(pid, O_EXITKILL)
        return True
    except OSError:
        return False
    finally:
        os.write(w, b"x")
        os.close(w)
        os.waitpid(pid, WALL)
