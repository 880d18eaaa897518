"""pidfd_open / pidfd_getfd (5.3 / 5.6): take a copy of a target's file descriptor."""

from __future__ import annotations

import os

from garrison.kernel._libc import syscall


def pidfd_open(pid: int) -> int:
    return syscall("pidfd_open", pid, 0)


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    return syscall("pidfd_getfd", pidfd, target_fd, 0)


def getfd(pid: int, target_fd: int) -> int:
    """Duplicate `target_fd` of process `pid` into this process (needs ptrace-attach rights)."""
    pfd = pidfd_open(pid)
    try:
        return pidfd_getfd(pfd, target_fd)
    finally:
        os.close(pfd)


def available() -> tuple[bool, bool]:
    """(pidfd_open works, pidfd_getfd works), probed on ourselves."""
    try:
        pfd = pidfd_open(os.getpid())
    except OSError:
        return False, False
    try:
        fd = pidfd_getfd(pfd, pfd)
        os.close(fd)
        return True, True
    except OSError:
        return True, False
    finally:
        os.close(pfd)
