"""The supervisor: installs the seccomp filter (and Landlock) on a helper thread, spawns the app
from it, dispatches notifications to handlers, forwards signals, reaps, propagates the exit status.

Why a helper thread: seccomp NEW_LISTENER and Landlock apply to the calling thread, and the listener
fd lands in the shared fd table, so the supervisor's own threads stay unrestricted while everything
the app starts inherits the filter. The helper stays alive (blocked) for the app's lifetime because
PR_SET_PDEATHSIG fires when the *thread* that forked the app exits.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from garrison.defender.exec_tracer import ExecTracer
from garrison.defender.notify import Handler, Notification, NotificationGone, SupervisorContext
from garrison.kernel import landlock, prctl, seccomp
from garrison.kernel._libc import NR_TO_NAME
from garrison.kernel.clone import CLONE_THREAD, CLONE_UNTRACED

log = logging.getLogger(__name__)

FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
    signal.SIGALRM,
)
PR_SET_DUMPABLE = 4
ENOSYS_SYSCALLS = {"clone3": errno.ENOSYS}
DENY_SYSCALLS = {"io_uring_enter": errno.EPERM, "io_uring_register": errno.EPERM}


class SpawnError(Exception):
    """The app could not be started (exec refused by the policy, not found, ...)."""

    def __init__(self, errno_: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno_


@dataclass
class LaunchPlan:
    """Everything decided before the app starts."""

    exe: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None = None
    landlock_dirs: list[str] = field(default_factory=list)
    landlock_files: list[str] = field(default_factory=list)
    use_landlock: bool = False
    nproc_limit: int | None = None
    trap_forks: bool = True
    post_exec_check: Callable[[int], bool] | None = None  # set: trace exec stops with ptrace
    on_traced_fork: Callable[[int, int], None] | None = None  # (parent, child) seen by the tracer
    landlock_tcp_ports: list[int] | None = None  # set: Landlock decides TCP connects, connect not trapped


def build_filter_spec(
    handlers: Iterable[str],
    only_if_arg_nonzero: dict[str, int],
    magic: int | None = None,
    *,
    trap_forks: bool = True,
) -> seccomp.FilterSpec:
    names = set(handlers)
    spec = seccomp.FilterSpec(exempt_magic=magic)
    # CLONE_UNTRACED makes a child the ptrace exec stop never sees: every such clone (process or
    # thread, tagged or not) goes to the supervisor, which refuses it. The flags are passed by value,
    # so the decision cannot be raced.
    spec.notify_if_flag["clone"] = CLONE_UNTRACED
    spec.notify_unless_flag["clone"] = CLONE_THREAD if trap_forks else 0xFFFFFFFF
    for name in names - {"clone"}:
        if name in only_if_arg_nonzero:
            spec.notify_if_arg_nonzero[name] = only_if_arg_nonzero[name]
        else:
            spec.notify.add(name)
    spec.errno.update(ENOSYS_SYSCALLS)
    spec.errno.update(DENY_SYSCALLS)
    # PR_SET_DUMPABLE 0 would take away our read access to its memory: fake success instead
    spec.errno_if.append(("prctl", [seccomp.ArgEq(0, PR_SET_DUMPABLE), seccomp.ArgEq(1, 0)], 0))
    return spec


_WALL = 0x40000000  # __WALL (linux/wait.h): Python has no name for it


class Supervisor:
    def __init__(
        self,
        ctx: SupervisorContext,
        handlers: dict[str, Handler],
        *,
        only_if_arg_nonzero: dict[str, int] | None = None,
        threads: int = 3,
        dataplane: str = "python",
        guard: Any = None,
    ) -> None:
        self.ctx = ctx
        self.dataplane = dataplane
        self.guard = guard
        self.native: Any = None  # NativeDataplane when dataplane == "native"
        self.handlers = handlers
        self.only_if_arg_nonzero = only_if_arg_nonzero or {}
        self.threads = threads
        self.listener = -1
        self.app_pid = 0
        self.landlock_rules = 0
        self._helper_release = threading.Event()
        self._workers: list[threading.Thread] = []
        self.notifications = 0
        self._inflight = 0  # handlers still running (their forensic lines come after the reply)
        self._idle = threading.Condition()
        self._magic = 0
        self.tracer: Any = None  # ExecTracer, or NativeExecTracer on the native data plane

    # ---- launch --------------------------------------------------------------------------------
    def start(self, plan: LaunchPlan) -> int:
        """Install the filter on a helper thread, start listeners, spawn the app; return its pid."""
        handlers = dict(self.handlers)
        if not plan.trap_forks:
            for k in ("fork", "vfork"):
                handlers.pop(k, None)
        if plan.landlock_tcp_ports is not None:
            handlers.pop("connect", None)
        self._magic = secrets.randbits(64) | 1
        spec = build_filter_spec(handlers, self.only_if_arg_nonzero, self._magic, trap_forks=plan.trap_forks)
        prog = seccomp.build_filter(spec)
        installed = threading.Event()
        go = threading.Event()
        result: dict[str, object] = {}
        r, w = os.pipe2(os.O_CLOEXEC)
        self._forward_signals()  # before the app exists: one sent while it starts is kept for it
        # same-uid app processes must not read or write our memory through /proc/<pid>/mem
        prctl.prctl(prctl.PR_SET_DUMPABLE, 0)
        prctl.set_child_subreaper()  # orphans of the app tree come to us: reaped, and killed with the app

        def helper() -> None:
            try:
                prctl.set_no_new_privs()
                if plan.use_landlock:
                    self.landlock_rules, _ = landlock.restrict_exec(plan.landlock_dirs, plan.landlock_files)
                if plan.landlock_tcp_ports is not None:
                    self.landlock_rules += landlock.restrict_tcp_connect(plan.landlock_tcp_ports)
                fd, killable = seccomp.install_listener(prog)
                self.ctx.features.wait_killable_recv = killable
                self.ctx.features.sync_wakeup = seccomp.set_sync_wakeup(fd)
                result["fd"] = fd
            except BaseException as exc:
                result["error"] = exc
                installed.set()
                return
            installed.set()
            go.wait()
            try:
                result["pid"] = self._fork_exec(plan, fd, r, w)
            except BaseException as exc:
                result["error"] = exc
            finally:
                installed.set()
                go.clear()
            # keep this thread alive: the app's PDEATHSIG is tied to it
            self._helper_release.wait()

        t = threading.Thread(target=helper, name="garrison-spawn", daemon=True)
        t.start()
        installed.wait()
        if "error" in result:
            raise result["error"]  # type: ignore[misc]
        self.listener = int(result["fd"])  # type: ignore[call-overload]
        if self.dataplane == "native":
            from garrison.defender.dataplane.loop import NativeDataplane

            self.native = NativeDataplane(
                self.listener, self.ctx, self._dispatch, self.guard, threads=self.threads
            )
            self.native.start(drain=False)  # the drain starts once the app is forked
        else:
            for i in range(self.threads):
                wt = threading.Thread(target=self._listen, name=f"garrison-notify-{i}", daemon=True)
                wt.start()
                self._workers.append(wt)
        if plan.post_exec_check is not None:
            if self.native is not None:  # the tracer loop in C; Python checks what it has not seen
                from garrison.defender.dataplane.tracer import NativeExecTracer

                self.tracer = NativeExecTracer(self.native, plan.post_exec_check)
            else:
                self.tracer = ExecTracer(plan.post_exec_check, plan.on_traced_fork)
            self.tracer.start()
        installed.clear()
        go.set()
        installed.wait()
        os.close(w)
        err = os.read(r, 256)
        os.close(r)
        if "error" in result:
            raise result["error"]  # type: ignore[misc]
        self.app_pid = int(result["pid"])  # type: ignore[call-overload]
        self._flush_held_signals()  # the app may have printed "ready" and been signalled through us
        if self.native is not None:
            self.native.start_drain()
        if err:
            code, _, msg = err.decode(errors="replace").partition(":")
            if self.tracer is not None:  # the tracer thread is the waiter
                self.tracer.done.wait(10)
            else:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.app_pid, 0)
            raise SpawnError(int(code), msg)
        return self.app_pid

    def _fork_exec(self, plan: LaunchPlan, listener: int, r: int, w: int) -> int:
        parent = os.getpid()
        hold_r, hold_w = os.pipe2(os.O_CLOEXEC) if self.tracer else (-1, -1)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC) if self.tracer else (-1, -1)
        pid = prctl.fork_with_tag(self._magic)
        if pid:
            if self.tracer:
                os.close(hold_r)
                os.close(ready_w)
                os.read(ready_r, 1)  # the child made itself dumpable (traceable) again
                os.close(ready_r)
                try:
                    self.tracer.attach(pid, hold_w)
                except OSError:
                    os.kill(pid, signal.SIGKILL)
                    raise
            return pid
        try:  # child: only this thread exists; keep to plain syscalls
            os.close(listener)  # the app must never be able to answer its own notifications
            os.close(r)
            prctl.set_pdeathsig(signal.SIGKILL)
            prctl.prctl(prctl.PR_SET_DUMPABLE, 1)  # the supervisor is not; the app must be readable
            if hold_r >= 0:  # wait until the tracer has seized us, so even the first exec is checked
                os.close(hold_w)
                os.close(ready_r)
                os.write(ready_w, b"r")
                os.close(ready_w)
                if os.read(hold_r, 1) != b"g":
                    os._exit(125)
            if os.getppid() != parent:
                os._exit(137)
            for s in (*FORWARDED_SIGNALS, signal.SIGPIPE, signal.SIGCHLD):
                signal.signal(s, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            if plan.nproc_limit:
                prctl.set_nproc_limit(plan.nproc_limit)
            if plan.cwd:
                os.chdir(plan.cwd)
            os.execve(plan.exe, plan.argv, plan.env)
        except OSError as exc:
            os.write(w, f"{exc.errno}:{exc.strerror}".encode())
        except BaseException as exc:
            os.write(w, f"0:{exc}".encode())
        os._exit(127)

    # ---- notifications -------------------------------------------------------------------------
    def _listen(self) -> None:
        buf = seccomp.SeccompNotif()
        fd = self.listener
        while True:
            try:
                seccomp.notif_recv(fd, buf)
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.ENOENT):
                    continue
                if exc.errno == errno.EBADF:
                    return
                log.error("seccomp listener: %s", exc)
                return
            self._dispatch(Notification(fd, buf.id, buf.pid, buf.data.nr, tuple(buf.data.args)))

    def _dispatch(self, n: Notification) -> None:
        """Decide one notification with its handler (both data planes come through here)."""
        self.notifications += 1
        handler = self.handlers.get(NR_TO_NAME.get(n.nr, ""))
        if handler is None:
            n.reply_continue()
            return
        with self._idle:
            self._inflight += 1
        try:
            self._handle(handler, n)
        finally:
            with self._idle:
                self._inflight -= 1
                if not self._inflight:
                    self._idle.notify_all()

    def _handle(self, handler: Handler, n: Notification) -> None:
        try:
            handler(n, self.ctx)
        except NotificationGone:
            n.close()
            self._answer_if_still_waiting(n)
        except Exception:
            log.exception("handler for %s failed", n.syscall)
            if not n.replied:
                try:
                    n.reply_error(errno.EPERM) if self._prevents() else n.reply_continue()
                except Exception:
                    log.exception("fail-safe reply failed")

    def stop_dataplane(self) -> None:
        """Flush the native loop's last records into audits, and let handlers still running finish:
        a handler writes its forensic line after its reply, so the app's last exec can end the app
        before its line is written (the forensic ring is closed right after this)."""
        if self.native is not None:
            self.native.stop()
        with self._idle:
            self._idle.wait_for(lambda: not self._inflight, timeout=1.0)

    @staticmethod
    def _answer_if_still_waiting(n: Notification) -> None:
        """Memory that cannot be read from a thread that is still waiting is a bad pointer, not a
        vanished thread: answer EFAULT as the kernel would, never leave the thread hanging."""
        if n.replied:
            return
        try:
            if n.valid():
                n.reply_error(errno.EFAULT)
        except OSError:
            log.exception("EFAULT reply failed")

    def _prevents(self) -> bool:
        rule = self.ctx.rule()
        if rule is None:
            return False
        return "prevent" in (rule.processes.effect, rule.network.effect, rule.dns.effect)

    # ---- waiting -------------------------------------------------------------------------------
    def _forward_signals(self) -> None:
        """The signals an operator or CF sends us are the app's. Installed before the app is spawned
        (a SIGTERM racing the spawn must not kill the defender and leave the app unsignalled): until
        its pid is known they are held, then sent by `_flush_held_signals`."""
        self._held_signals: list[int] = []

        def forward(sig: int, _frame: object) -> None:
            if not self.app_pid:
                self._held_signals.append(sig)
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.app_pid, sig)

        for s in FORWARDED_SIGNALS:
            signal.signal(s, forward)

    def _flush_held_signals(self) -> None:
        held, self._held_signals = self._held_signals, []
        for sig in held:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.app_pid, sig)

    def wait(self) -> int:
        """Forward signals to the app, reap everything re-parented to us, return the app's status as
        a shell would (128+N for a signal)."""
        app = self.app_pid
        status = 0
        if self.tracer is not None:  # the tracer thread is the only waiter
            while not self.tracer.done.wait(0.5):
                pass
            st = self.tracer.app_status
            status = os.waitstatus_to_exitcode(st) if st is not None else -9
            self.kill_orphans()
            return 128 - status if status < 0 else status
        while True:
            try:
                pid, st = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == app:
                status = os.waitstatus_to_exitcode(st)
                break
        self.kill_orphans()
        return 128 - status if status < 0 else status

    def kill_orphans(self) -> None:
        """Descendants left behind (re-parented to us as subreaper) die with the app: fail-closed.
        Repeated, because killing one orphan re-parents its own children to us."""
        me = os.getpid()
        for _ in range(100):
            if not self._has_children():  # the usual case: no scan of every process on the host
                return
            kids = self._children(me)
            if not kids:
                break
            for pid in kids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            self._reap_nohang()
            time.sleep(0.01)
        self._reap_nohang()

    @staticmethod
    def _has_children() -> bool:
        """Any child at all, alive or not yet reaped (waitid without reaping; __WALL: whatever
        signal it was cloned with)."""
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT | _WALL)
        except ChildProcessError:
            return False
        return True

    @staticmethod
    def _children(me: int) -> list[int]:
        out = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                with open(f"/proc/{name}/status", "rb") as f:
                    ppid = next((int(ln.split()[1]) for ln in f if ln.startswith(b"PPid:")), 0)
            except (OSError, ValueError):
                continue
            if ppid == me:
                out.append(int(name))
        return out

    @staticmethod
    def _reap_nohang() -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
