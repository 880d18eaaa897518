"""The plug-in contract between the defender supervisor and the controls that handle trapped syscalls.

The supervisor owns the seccomp listener and dispatches each user notification, by syscall name, to
one `Handler`. The network controls (`garrison.defender.net`) plug in through this module only:

    TRAPPED_SYSCALLS: list[str]              # in garrison/defender/net/__init__.py
    NetworkGuard(ctx).handlers[name] = Handler ; .start() ; .stop()

A handler must reply exactly once (`reply_continue`, `reply_error`, `reply_value` or `reply_addfd`).
If it raises, the supervisor replies for it (EPERM when the rule prevents, else CONTINUE) and logs.
Handlers may run concurrently on several listener threads: keep shared state locked.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from garrison.kernel import pidfd, seccomp
from garrison.kernel._libc import NR_TO_NAME
from garrison.kernel.features import KernelFeatures
from garrison.kernel.procmem import MemReader
from garrison.policy.audit import AuditEvent
from garrison.policy.model import Rule

__all__ = [
    "Handler",
    "KernelFeatures",
    "Notification",
    "NotificationGone",
    "ProcInfo",
    "SupervisorContext",
]


_pidfd_open_ok = True  # until the host says otherwise (EPERM/ENOSYS once)


class NotificationGone(Exception):
    """The trapped syscall's thread died, or the notification id is no longer valid: do not decide on
    data read for it (it may belong to a recycled thread); just drop it."""


class Notification:
    """One seccomp user notification (x86_64). `tid` is the trapping thread (notif.pid is a thread id);
    `pid` is its thread group, looked up lazily (pidfd_open, else /proc/<tid>/status)."""

    __slots__ = ("__dict__", "_listener", "_mem", "_pidfd", "_replied", "args", "id", "nr", "tid")

    def __init__(self, listener_fd: int, notif_id: int, tid: int, nr: int, args: tuple[int, ...]) -> None:
        self._listener = listener_fd
        self.id = notif_id
        self.tid = tid
        self.nr = nr
        self.args: tuple[int, int, int, int, int, int] = tuple(args)  # type: ignore[assignment]
        self._mem: MemReader | None = None
        self._pidfd: int | None = None
        self._replied = False

    @property
    def syscall(self) -> str:
        return NR_TO_NAME.get(self.nr, str(self.nr))

    @functools.cached_property
    def pid(self) -> int:
        global _pidfd_open_ok
        if _pidfd_open_ok:
            # pidfd_open succeeds only on a thread-group leader: then tid is the pid, and the pidfd is
            # kept for get_fd. Two syscalls instead of rendering /proc/<tid>/status (~50 µs per exec).
            try:
                fd = pidfd.pidfd_open(self.tid)
            except OSError as exc:
                fd = -1
                if exc.errno in (_errno.ENOSYS, _errno.EPERM):  # Garden's profile blocks pidfd_*
                    _pidfd_open_ok = False
            if fd >= 0:
                if self._replied:  # asked after the reply: close() has run, keep nothing open
                    os.close(fd)
                else:
                    self._pidfd = fd
                return self.tid
        try:
            with open(f"/proc/{self.tid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Tgid:"):
                        return int(line.split()[1])
        except OSError:
            pass
        self._gone()
        return self.tid

    def valid(self) -> bool:
        """True while the trapped thread is still waiting for this reply."""
        return seccomp.notif_id_valid(self._listener, self.id)

    def _gone(self) -> None:
        if not self.valid():
            raise NotificationGone(f"notification {self.id} of thread {self.tid} is gone")

    def _reader(self) -> MemReader:
        if self._mem is None:
            self._mem = MemReader(self.tid)
        return self._mem

    def read(self, addr: int, size: int) -> bytes:
        """Read target memory (process_vm_readv, else /proc/<pid>/mem), then check ID_VALID: raises
        NotificationGone if the thread went away meanwhile. Short at unmapped pages."""
        return self._checked(lambda m: m.read_chunked(addr, size))

    def read_cstring(self, addr: int, limit: int = 4096) -> bytes:
        """A NUL-terminated string from target memory (ID_VALID checked after the read)."""
        return self._checked(lambda m: m.read_cstring(addr, limit))

    def _checked(self, read: Callable[[MemReader], bytes]) -> bytes:
        """Data read for a notification counts only if the notification is still valid afterwards (the
        thread may be gone and its tid recycled); unreadable memory also counts as gone (the
        supervisor answers EFAULT if the thread is in fact still waiting)."""
        try:
            data = read(self._reader())
        except OSError as exc:
            self._gone()
            raise NotificationGone(f"cannot read memory of {self.tid}: {exc}") from exc
        self._gone()
        return data

    def get_fd(self, target_fd: int) -> int:
        """Duplicate the target's fd into the supervisor with pidfd_getfd. OSError if unavailable
        (e.g. Garden blocks pidfd_*); the caller owns (and must close) the returned fd."""
        pid = self.pid
        if self._pidfd is None:
            self._pidfd = pidfd.pidfd_open(pid)
        fd = pidfd.pidfd_getfd(self._pidfd, target_fd)
        if not self.valid():
            os.close(fd)
            raise NotificationGone(f"notification {self.id} is gone")
        return fd

    def _send(self, **kw: int | bool) -> None:
        if self._replied:
            raise RuntimeError(f"notification {self.id} already answered")
        self._replied = True
        self.close()
        seccomp.notif_send(self._listener, self.id, **kw)  # type: ignore[arg-type]

    def reply_continue(self) -> None:
        """Let the kernel run the syscall as the app issued it (racy for pointer arguments)."""
        self._send(cont=True)

    def reply_error(self, errno_: int) -> None:
        """Fail the syscall with -errno_ (e.g. errno.EPERM); a gone target is ignored."""
        self._send(error=errno_ or _errno.EPERM)

    def reply_value(self, value: int) -> None:
        """Make the syscall return `value` without running it (emulation)."""
        self._send(val=value)

    def reply_addfd(self, fd: int, *, cloexec: bool = False) -> int:
        """Install our `fd` in the target and return its number there as the syscall result (ADDFD|SEND,
        5.14+). The caller still owns `fd`."""
        if self._replied:
            raise RuntimeError(f"notification {self.id} already answered")
        self._replied = True
        self.close()
        try:
            return seccomp.notif_addfd(self._listener, self.id, fd, send=True, cloexec=cloexec)
        except OSError as exc:
            if exc.errno == _errno.ENOENT:
                return -1
            raise

    def install_fd(self, fd: int, at: int, *, cloexec: bool = False) -> None:
        """Put our `fd` in the target at descriptor number `at`, replacing what is there (ADDFD with
        SETFD, 5.9), without replying. The caller still owns `fd`."""
        try:
            seccomp.notif_addfd(self._listener, self.id, fd, send=False, cloexec=cloexec, newfd=at)
        except OSError as exc:
            if exc.errno == _errno.ENOENT:
                raise NotificationGone(f"notification {self.id} is gone") from exc
            raise

    @property
    def replied(self) -> bool:
        return self._replied

    def close(self) -> None:
        if self._mem is not None:
            self._mem.close()
            self._mem = None
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


@dataclass
class ProcInfo:
    """Best-effort facts about a process from /proc (empty fields when it is gone)."""

    pid: int
    ppid: int | None = None
    exe: str | None = None
    argv: list[str] = field(default_factory=list)
    cwd: str | None = None
    uid: int | None = None


class SupervisorContext(Protocol):
    features: KernelFeatures

    def rule(self) -> Rule | None:
        """The rule that applies now (replaced atomically on every policy push)."""
        ...

    def audit(self, event: AuditEvent) -> None:
        """Fill defender/app identity and rule name if empty, record in the forensic ring, spool and
        send to the console. Thread-safe; never blocks on the network."""
        ...

    def proc(self, pid: int) -> ProcInfo:
        """exe, argv, cwd, ppid of `pid` (best effort from /proc)."""
        ...

    def record(self, kind: str, **facts: object) -> None:
        """Add a line to the forensic ring buffer (activity that is not an audit, e.g. an allowed connect)."""
        ...


Handler = Callable[[Notification, SupervisorContext], None]
"""Decides one notification; must reply exactly once."""


def read_proc(pid: int) -> ProcInfo:
    """Shared /proc reader behind SupervisorContext.proc."""
    info = ProcInfo(pid=pid)
    base = f"/proc/{pid}"
    try:
        with open(f"{base}/status", "rb") as f:
            for line in f:
                if line.startswith(b"PPid:"):
                    info.ppid = int(line.split()[1])
                elif line.startswith(b"Uid:"):
                    info.uid = int(line.split()[1])
    except OSError:
        return info
    with contextlib.suppress(OSError):
        info.exe = os.readlink(f"{base}/exe")
    with contextlib.suppress(OSError):
        info.cwd = os.readlink(f"{base}/cwd")
    try:
        with open(f"{base}/cmdline", "rb") as f:
            raw = f.read(65536)
        info.argv = [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]][:256]
    except OSError:
        pass
    return info
