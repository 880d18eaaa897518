"""A minimal seccomp-notify supervisor that runs only the network guard.

The full defender's supervisor (garrison.defender) owns launch, process controls and its own loop;
this runner exists so the guard can be tested and benchmarked on a real kernel on its own, and
implements the same Notification / SupervisorContext contract.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from garrison.defender.net import _kernel
from garrison.defender.net.contract import Handler, LocalGone
from garrison.policy.audit import AuditEvent
from garrison.policy.model import Rule


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int | None = None
    exe: str | None = None
    argv: list[str] | None = None
    cwd: str | None = None


def proc_info(pid: int) -> ProcInfo:
    def safe(fn: str) -> str | None:
        try:
            return os.readlink(f"/proc/{pid}/{fn}")
        except OSError:
            return None

    argv: list[str] | None = None
    ppid: int | None = None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fb:
            argv = [a.decode(errors="replace") for a in fb.read().split(b"\0")[:-1]][:256]
        with open(f"/proc/{pid}/status") as ft:
            for line in ft:
                if line.startswith("PPid:"):
                    ppid = int(line.split()[1])
    except OSError:
        pass
    return ProcInfo(pid, ppid, safe("exe"), argv, safe("cwd"))


_TGIDS: dict[int, int] = {}


def tgid_of(tid: int) -> int:
    """notif.pid is a thread id; the process is its thread-group leader (cached: /proc costs ~30 µs)."""
    tgid = _TGIDS.get(tid)
    if tgid is not None:
        return tgid
    if len(_TGIDS) > 65536:
        _TGIDS.clear()
    _TGIDS[tid] = tgid = _read_tgid(tid)
    return tgid


def _read_tgid(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return tid


class StandaloneNotification:
    """One trapped syscall; replies go straight to the listener."""

    def __init__(self, sup: Supervised, nid: int, tid: int, nr: int, args: tuple[int, ...]) -> None:
        self._sup = sup
        self.id = nid
        self.tid = tid
        self.pid = tgid_of(tid)
        self.nr = nr
        self.args = args

    def valid(self) -> bool:
        return _kernel.notif_id_valid(self._sup.listener, self.id)

    def _valid(self) -> None:
        if not self.valid():
            raise LocalGone(self.id)

    def read(self, addr: int, size: int) -> bytes:
        try:
            data = _kernel.read_mem(self.tid, addr, size)
        except OSError as exc:  # as the defender's own Notification: unreadable means "gone" to handlers
            raise LocalGone(self.id) from exc
        self._valid()
        return data

    def get_fd(self, target_fd: int) -> int:
        fd = _kernel.pidfd_getfd(self._sup.pidfd_for(self.pid), target_fd)
        try:
            self._valid()
        except LocalGone:
            os.close(fd)
            raise
        return fd

    def _send(self, val: int = 0, error: int = 0, flags: int = 0) -> None:
        try:
            _kernel.notif_send(self._sup.listener, self.id, val, error, flags)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # the thread is gone: nothing to answer
                raise

    def reply_continue(self) -> None:
        self._send(flags=_kernel.SECCOMP_USER_NOTIF_FLAG_CONTINUE)

    def reply_error(self, errno_: int) -> None:
        self._send(error=-abs(errno_))

    def reply_value(self, v: int) -> None:
        self._send(val=v)


@dataclass
class StandaloneContext:
    """rule() is live: assign `current` to change policy while the app runs."""

    current: Rule | None = None
    audits: list[AuditEvent] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def rule(self) -> Rule | None:
        return self.current

    def audit(self, event: AuditEvent) -> None:
        with self._lock:
            self.audits.append(event)

    def proc(self, pid: int) -> ProcInfo:
        return proc_info(pid)


class Supervised:
    """An app run under a notify filter for `handlers`' syscalls, supervised on a thread."""

    def __init__(
        self,
        argv: Sequence[str],
        handlers: dict[str, Handler],
        ctx: StandaloneContext,
        *,
        nonzero_arg: dict[str, int] | None = None,
        user: tuple[int, int] | None = (65534, 65534),
        env: dict[str, str] | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> None:
        self.ctx = ctx
        self._handlers = {_kernel.SYSCALLS[n]: h for n, h in handlers.items()}
        ready_r, ready_w = os.pipe()
        ack_r, ack_w = os.pipe()
        uid, gid = user if user else (-1, -1)
        cond = ",".join(f"{k}={v}" for k, v in (nonzero_arg or {}).items() if k in handlers)
        cmd = [
            sys.executable, "-m", "garrison.defender.net._child",
            str(ready_w), str(ack_r), str(uid), str(gid), ",".join(handlers), cond, "--", *argv,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, pass_fds=(ready_w, ack_r), env=env, stdout=stdout, stderr=stderr, cwd="/"
        )
        os.close(ready_w)
        os.close(ack_r)
        try:
            raw = os.read(ready_r, 32)
            if not raw:
                raise RuntimeError(f"supervised child failed before handing over its listener: {cmd}")
            self._pidfds: dict[int, int] = {}
            self.listener = _kernel.pidfd_getfd(self.pidfd_for(self.proc.pid), int(raw))
            self.sync_wakeup = _kernel.set_sync_wakeup(self.listener)
            os.write(ack_w, b"1")
        finally:
            os.close(ready_r)
            os.close(ack_w)
        self._closed = False
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._loop, name="garrison-net-supervisor", daemon=True)
        self._thread.start()

    def pidfd_for(self, pid: int) -> int:
        fd = self._pidfds.get(pid)
        if fd is None:
            fd = self._pidfds[pid] = _kernel.pidfd_open(pid)
        return fd

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self.listener, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            events = dict(poller.poll())
            if self._stop_r in events:
                return
            ev = events.get(self.listener, 0)
            if ev & select.POLLIN:
                try:
                    nid, tid, nr, args = _kernel.notif_recv(self.listener)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.EINTR):
                        continue
                    return
                notif = StandaloneNotification(self, nid, tid, nr, args)
                handler = self._handlers.get(nr)
                if handler is None:
                    notif.reply_continue()
                else:
                    handler(notif, self.ctx)
            elif ev & (select.POLLHUP | select.POLLERR):
                return

    def communicate(self, timeout: float | None = None) -> tuple[int, str, str]:
        """Wait for the app (stdout/stderr=PIPE), then stop supervising: (rc, stdout, stderr)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        finally:
            self.close()
        return (
            self.proc.returncode,
            (out or b"").decode(errors="replace"),
            (err or b"").decode(errors="replace"),
        )

    def wait(self, timeout: float | None = None) -> int:
        rc = self.proc.wait(timeout)
        self.close()
        return rc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self.listener, self._stop_r, self._stop_w, *self._pidfds.values()):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._pidfds.clear()
