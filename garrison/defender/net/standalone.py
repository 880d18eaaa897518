"""A minimal seccomp-notify supervisor that runs only the network guard.

The full defender's supervisor (garrison.defender) owns launch, process controls and its own loop;
this runner exists so the guard can be tested and benchmarked on a real kernel on its own. It uses
the defender's own `Notification` and `garrison.kernel`, so what it exercises is the real path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from garrison.defender.net.contract import Handler
from garrison.defender.notify import Notification, ProcInfo, read_proc
from garrison.kernel import pidfd, seccomp
from garrison.kernel._libc import SYSCALLS
from garrison.policy.audit import AuditEvent
from garrison.policy.model import Rule


class StandaloneContext:
    """rule() is live: assign `current` to change policy while the app runs (policy listeners, e.g.
    the native data plane's table swap, are told at once)."""

    def __init__(self, current: Rule | None = None) -> None:
        self._current = current
        self.audits: list[AuditEvent] = []
        self._lock = threading.Lock()
        self.policy_listeners: list[Callable[[Rule | None], None]] = []

    @property
    def current(self) -> Rule | None:
        return self._current

    @current.setter
    def current(self, rule: Rule | None) -> None:
        self._current = rule
        for cb in list(self.policy_listeners):
            cb(rule)

    def rule(self) -> Rule | None:
        return self._current

    def audit(self, event: AuditEvent) -> None:
        with self._lock:
            self.audits.append(event)

    def proc(self, pid: int) -> ProcInfo:
        return read_proc(pid)


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
        dataplane: str = "python",
        guard: Any = None,
        dataplane_options: dict[str, Any] | None = None,
    ) -> None:
        self.ctx = ctx
        self._handlers = {SYSCALLS[n]: h for n, h in handlers.items()}
        self.native: Any = None
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
            child = pidfd.pidfd_open(self.proc.pid)
            try:
                self.listener = pidfd.pidfd_getfd(child, int(raw))
            finally:
                os.close(child)
            self.sync_wakeup = seccomp.set_sync_wakeup(self.listener)
            os.write(ack_w, b"1")
        finally:
            os.close(ready_r)
            os.close(ack_w)
        self._closed = False
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None
        if dataplane == "native":
            from garrison.defender.dataplane.loop import NativeDataplane

            opts = {"threads": 1, **(dataplane_options or {})}
            self.native = NativeDataplane(self.listener, ctx, self._dispatch, guard, **opts)
            self.native.start()
        else:
            self._thread = threading.Thread(target=self._loop, name="garrison-net-supervisor", daemon=True)
            self._thread.start()

    def _dispatch(self, notif: Notification) -> None:
        handler = self._handlers.get(notif.nr)
        if handler is None:
            notif.reply_continue()
        else:
            handler(notif, self.ctx)

    def _loop(self) -> None:
        buf = seccomp.SeccompNotif()
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
                    seccomp.notif_recv(self.listener, buf)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.EINTR):
                        continue
                    return
                self._dispatch(
                    Notification(self.listener, buf.id, buf.pid, buf.data.nr, tuple(buf.data.args))
                )
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
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.native is not None:
            self.native.stop()
        for fd in (self.listener, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
