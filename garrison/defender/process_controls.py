"""Process controls: exec allow/deny and drift (before the program runs), memfd exec, fork-bomb
guard, and the bypass closers (ptrace, process_vm_writev, io_uring). Decisions come from the shared
pure evaluator; this module only gathers facts from the kernel and applies the verdict."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from typing import Any

from garrison.defender.baseline import Baseline, LazyBaseline
from garrison.defender.context import RateWindow
from garrison.defender.execinfo import (
    AT_FDCWD,
    MAX_ARGS,
    ExecTarget,
    IdentityCheck,
    identify,
    inspect,
    interpreter_of,
    is_loader,
    loader_target,
)
from garrison.defender.identity import IdentityMatcher
from garrison.defender.notify import Handler, Notification, NotificationGone, ProcInfo, SupervisorContext
from garrison.defender.proctree import AppTree, UserTasks
from garrison.kernel import memfd as kmemfd
from garrison.kernel import pidfd as kpidfd
from garrison.kernel._libc import SYSCALLS
from garrison.kernel.clone import CLONE_THREAD, CLONE_UNTRACED
from garrison.kernel.procmem import MemReader
from garrison.policy.audit import AuditEvent
from garrison.policy.evaluate import (
    Decision,
    decide_exec,
    decide_fork,
    decide_unidentified_exec,
    exec_controls_on,
)
from garrison.policy.model import Rule

log = logging.getLogger(__name__)

_EXECVEAT = SYSCALLS["execveat"]
EXEC_AUDIT_WINDOW_S = 2.0
STOP_CMDLINE_MAX = 65536  # how much of /proc/<pid>/cmdline the exec stop reads


class ExecAuditOnce:
    """One decision, one audit: libc's PATH search (execvp, posix_spawnp, Python's subprocess) tries the
    same file under every PATH entry that reaches it (/usr/bin and /bin on a merged-/usr system), so a
    refused exec is attempted, and decided, twice by the same process. An audit whose key (pid, file,
    argv, control, effect) was audited in the last EXEC_AUDIT_WINDOW_S seconds is not repeated."""

    def __init__(self, window: float = EXEC_AUDIT_WINDOW_S, size: int = 4096) -> None:
        self.window = window
        self.size = size
        self._seen: dict[tuple[object, ...], float] = {}
        self._lock = threading.Lock()

    def first(self, key: tuple[object, ...], now: float | None = None) -> bool:
        """True the first time `key` is seen within the window (then it should be audited)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last < self.window:
                return False
            if len(self._seen) >= self.size:  # drop what is out of the window (bounded memory)
                self._seen = {k: t for k, t in self._seen.items() if now - t < self.window}
                if len(self._seen) >= self.size:
                    self._seen.clear()
            self._seen[key] = now
            return True


def _ppid(pid: int) -> int | None:
    """Parent pid from /proc/<pid>/stat (cheaper to render than status; the comm field may hold
    spaces and parentheses, so parse after the last ')')."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read(512)
        return int(raw[raw.rindex(b")") + 2 :].split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return None


class ProcessControls:
    """Handlers for the syscalls the supervisor traps for its own controls."""

    def __init__(
        self,
        ctx: SupervisorContext,
        baseline: Baseline | LazyBaseline,
        *,
        app_uid: int | None = None,
        nproc_limit: int | None = None,
    ) -> None:
        self.ctx = ctx
        self._baseline = baseline
        self.app_uid = os.getuid() if app_uid is None else app_uid
        self.forks = RateWindow()
        self._last_fork_audit = 0.0
        self._forks_unreported = 0
        self._last_fork: tuple[int, Decision] | None = None
        self._fork_timer: threading.Timer | None = None
        self.tree = AppTree()
        self.tree.allowed_fork()  # the app itself: the supervisor starts it with no notification
        self.user_tasks = UserTasks(self.app_uid, nproc_limit)
        self._lock = threading.Lock()
        self._exec_audits = ExecAuditOnce()
        self.identities = IdentityMatcher()
        rule = ctx.rule()
        if rule is not None and rule.processes.deny:
            self.identities.load(rule.processes.deny)  # before the app runs: copies denied from the start
        listeners = getattr(ctx, "policy_listeners", None)
        if listeners is not None:
            listeners.append(self._on_policy)
        self.handlers: dict[str, Handler] = {
            "execve": self.on_exec,
            "execveat": self.on_exec,
            "memfd_create": self.on_memfd,
            "clone": self.on_fork,
            "fork": self.on_fork,
            "vfork": self.on_fork,
            "ptrace": self.on_ptrace,
            "process_vm_writev": self.on_ptrace,
            "io_uring_setup": self.on_io_uring,
        }

    # ---- exec -------------------------------------------------------------------------------
    def on_exec(self, n: Notification, ctx: SupervisorContext) -> None:
        rule = ctx.rule()
        prevent = rule is not None and rule.processes.effect == "prevent" and exec_controls_on(rule)
        mem = MemReader(n.tid)
        try:
            pid = n.pid
            t = inspect(
                mem,
                pid,
                n.nr == _EXECVEAT,
                n.args,
                n.tid,
                head=exec_controls_on(rule),
                identity=self._identity(rule),
            )
        except OSError as exc:
            # unreadable target: gone, or its memory is garbage (EFAULT, as the kernel would answer)
            if not n.valid():
                raise NotificationGone(str(exc)) from exc
            n.reply_error(errno.EFAULT) if prevent else n.reply_continue()
            return
        finally:
            mem.close()
        if not n.valid():  # ID_VALID after every read, before deciding
            raise NotificationGone(f"exec notification {n.id} gone")
        if t.error:
            self._on_unidentified(n, ctx, rule, pid, t, prevent)
            return
        d, t = self.decide_target(rule, pid, n.tid, t)
        # before the reply: once the program runs it may exit and be reaped at once (the forensic
        # tree needs the edge), and the audit describes the live process
        ppid = _ppid(pid)
        if d.audited and self._exec_audits.first(_exec_key(pid, t, d)):
            self._audit_exec(ctx, pid, t, d, ppid=ppid)
        dp = getattr(ctx, "dataplane", None)
        if dp is not None and not d.violation and n.nr != _EXECVEAT:
            dp.remember_exec(rule, t)  # the native loop answers this same exec itself from now on
        if d.blocked:
            n.reply_error(errno.EACCES)
        else:
            n.reply_continue()
        # the forensic line does not need the app to wait for it
        ctx.record(
            "exec",
            pid=pid,
            ppid=ppid,
            exe=t.exe,
            argv=t.argv[:32],
            loader=t.via_loader,
            script=t.via_script,
            verdict=_verdict(d),
        )

    def _on_unidentified(
        self,
        n: Notification,
        ctx: SupervisorContext,
        rule: Rule | None,
        pid: int,
        t: ExecTarget,
        prevent: bool,
    ) -> None:
        """Nothing the lookup found can run, or what would run cannot be identified. Under prevent the
        defender answers the errno the kernel would give itself (a CONTINUE would let the kernel look
        the path up again, and a racing thread could change it in between); otherwise the kernel
        answers."""
        err = errno.errorcode.get(t.error, str(t.error))
        d = decide_unidentified_exec(rule, err, t.raw_path)
        if d.audited and self._exec_audits.first(_exec_key(pid, t, d)):
            self._audit_exec(ctx, pid, t, d)
        if prevent:
            n.reply_error(errno.EACCES if d.blocked and t.error in (errno.ELOOP, errno.EMFILE) else t.error)
        else:
            n.reply_continue()
        if d.violation:
            ctx.record(
                "exec", pid=pid, ppid=_ppid(pid), exe=t.raw_path, argv=t.argv[:32], verdict=_verdict(d)
            )

    def decide_target(
        self, rule: Rule | None, pid: int, tid: int, t: ExecTarget
    ) -> tuple[Decision, ExecTarget]:
        """The decision on what will really run: the file, and for a `#!` script also the interpreter
        the kernel will start for it (the first violation wins). Returns the target decided on."""
        d = self._decide(rule, t, self.in_baseline(rule, t))
        if d.violation or not t.fd_head.startswith(b"#!") or not exec_controls_on(rule):
            return d, t
        it = interpreter_of(pid, tid, t, identity=self._identity(rule))
        if it is None or not it.exists:
            return d, t  # no interpreter: the kernel fails the exec (ENOENT/ENOEXEC)
        d2 = self._decide(rule, it, self.in_baseline(rule, it))
        return (d2, it) if d2.violation else (d, t)

    def _on_policy(self, rule: Rule | None) -> None:
        """A pushed rule: hash what its deny list names now (not on the app's next exec), and count
        the tree afresh at the next fork (forks may have gone uncounted under the previous rule)."""
        self.tree.invalidate()
        if rule is not None and rule.processes.deny and rule.processes.effect != "disable":
            self.identities.load(rule.processes.deny)

    def _identity(self, rule: Rule | None) -> IdentityCheck | None:
        """The content check against the deny list's files, when there is a deny list in force."""
        if rule is None or not rule.processes.deny or rule.processes.effect == "disable":
            return None
        deny = rule.processes.deny
        return lambda fd, st: self.identities.match(deny, fd, st)

    @staticmethod
    def _decide(rule: Rule | None, t: ExecTarget, in_base: bool) -> Decision:
        """Patterns match the resolved file *or* the path as the app named it (/bin/sh → /usr/bin/dash),
        and a file with the content of a denied one is denied (identity): a deny on any of them
        refuses; an allow-list accepts either path."""
        argv = t.argv or [t.exe]
        d = decide_exec(rule, t.exe, argv, in_baseline=in_base, copy_of=t.copy_of)
        named = t.named
        if not named or named == t.exe:
            return d
        d2 = decide_exec(rule, named, argv, in_baseline=in_base, copy_of=t.copy_of)
        for cand in (d, d2):
            if cand.violation and cand.control == "processes.deny":
                return cand
        return d if not d.violation else d2

    def in_baseline(self, rule: Rule | None, t: ExecTarget) -> bool:
        """Only computed when drift prevention is on (else every exec would pay for it)."""
        if rule is None or not rule.processes.drift_prevention or rule.processes.effect == "disable":
            return True
        if t.memfd:
            return False
        b = self._baseline.get() if isinstance(self._baseline, LazyBaseline) else self._baseline
        return b.contains(t.exe, t.st)

    def check_exec_stop(self, pid: int) -> bool:
        """Post-exec check at the ptrace exec stop: True = kill. Audits only what it refuses (the
        seccomp pre-check already audited what it let through). /proc/<pid>/exe is the very file the
        kernel loaded (for a script: its interpreter); `ld.so FILE` is resolved as the process sees
        it, and a FILE that cannot be identified is refused under prevent."""
        rule = self.ctx.rule()
        if rule is None or rule.processes.effect != "prevent":
            return False
        base = f"/proc/{pid}"
        exe = os.readlink(f"{base}/exe")
        with open(f"{base}/cmdline", "rb") as f:
            cmdline = f.read(STOP_CMDLINE_MAX)
        argv = [a.decode(errors="surrogateescape") for a in cmdline.split(b"\0")[:-1]][:MAX_ARGS]
        cwd = os.readlink(f"{base}/cwd")
        memfd = exe.startswith("/memfd:")
        fd = os.open(f"{base}/exe", os.O_PATH | os.O_CLOEXEC)  # the exact inode now mapped
        try:
            st = os.fstat(fd)
            check = self._identity(rule)
            copy_of = check(fd, st) if check is not None and not memfd else {}
        finally:
            os.close(fd)
        t = ExecTarget(
            raw_path=exe, exe=exe, argv=argv, cwd=cwd, exists=True, st=st, memfd=memfd, copy_of=copy_of
        )
        if not memfd and is_loader(exe):
            idx = loader_target(argv)
            if idx is not None:
                inner = identify(pid, pid, AT_FDCWD, argv[idx], 0, argv[idx:], identity=self._identity(rule))
                inner.via_loader = exe
                if inner.error:
                    d = decide_unidentified_exec(rule, errno.errorcode.get(inner.error, "?"), argv[idx])
                    if d.blocked:
                        self._audit_exec(self.ctx, pid, inner, d, stage="killed at the exec stop (ptrace)")
                    return d.blocked
                t = inner
        d = self._decide(rule, t, self.in_baseline(rule, t))
        if not d.blocked:
            dp = getattr(self.ctx, "dataplane", None)
            if dp is not None and not memfd and not t.via_loader and len(cmdline) < STOP_CMDLINE_MAX:
                dp.remember_exec_stop(rule, exe, cmdline, st)  # the native tracer lets it go on from now on
            return False
        self._audit_exec(self.ctx, pid, t, d, stage="killed at the exec stop (ptrace)")
        return True

    def _audit_exec(
        self,
        ctx: SupervisorContext,
        pid: int,
        t: ExecTarget,
        d: Decision,
        stage: str = "",
        ppid: int | None = None,
    ) -> None:
        drift = d.control == "processes.drift_prevention"
        msg = f"{d.reason}; {stage}" if stage else d.reason
        if t.memfd:
            msg = f"exec of an in-memory file (memfd) {t.exe}: {d.reason}"
        if t.via_loader:
            msg = f"{msg} (run through the dynamic loader {t.via_loader})"
        if t.via_script:
            msg = f"{msg} (interpreter of the script {t.via_script})"
        ctx.audit(
            AuditEvent(
                type="drift" if drift else "process",
                control=d.control,
                effect="prevent" if d.blocked else "alert",
                severity="high",
                pid=pid,
                ppid=_ppid(pid) if ppid is None else ppid,
                exe=t.exe,
                argv=t.argv[:256],
                cwd=t.cwd or None,
                message=msg,
                extra={
                    k: v
                    for k, v in (("memfd", t.memfd), ("loader", t.via_loader), ("script", t.via_script))
                    if v
                },
            )
        )

    # ---- memfd: make it non-executable forever under drift prevention (prevent) -------------
    def on_memfd(self, n: Notification, ctx: SupervisorContext) -> None:
        rule = ctx.rule()
        pc = rule.processes if rule else None
        if (
            pc is None
            or not pc.drift_prevention
            or pc.effect != "prevent"
            or not ctx.features.memfd_noexec_seal
            or not ctx.features.notif_addfd_send
        ):
            n.reply_continue()  # the exec check still refuses/reports exec of memfd files
            return
        name = n.read_cstring(n.args[0], 249)
        flags = n.args[1] & 0xFFFFFFFF
        if flags & kmemfd.MFD_HUGETLB:
            n.reply_continue()
            return
        if flags & kmemfd.MFD_EXEC:
            ctx.record("memfd_exec_flag", pid=n.pid, name=name.decode(errors="replace"))
        new_flags = (
            (flags & ~kmemfd.MFD_EXEC & ~kmemfd.MFD_CLOEXEC) | kmemfd.MFD_NOEXEC_SEAL | kmemfd.MFD_CLOEXEC
        )
        try:
            fd = kmemfd.memfd_create(name, new_flags)
        except OSError as exc:
            n.reply_error(exc.errno or errno.ENOMEM)
            return
        try:
            n.reply_addfd(fd, cloexec=bool(flags & kmemfd.MFD_CLOEXEC))
        finally:
            os.close(fd)

    # ---- fork-bomb guard ------------------------------------------------------------------------
    def on_fork(self, n: Notification, ctx: SupervisorContext) -> None:
        flags = n.args[0] & 0xFFFFFFFF if n.syscall == "clone" else 0
        if flags & CLONE_UNTRACED:
            self.on_clone_untraced(n, ctx, flags)
            return
        # a fork the native loop handed over comes with its rate count (every fork is counted there)
        native_rate = getattr(n, "fork_rate", None)
        rate = native_rate if native_rate is not None else self.forks.hit()
        pid = n.pid  # now: the forking thread may be gone right after the reply
        rule = ctx.rule()
        fb = rule.processes.fork_bomb_guard if rule else None
        if rule is None or fb is None or rule.processes.effect == "disable":
            self.tree.allowed_fork()
            n.reply_continue()
            self._record_fork(ctx, n, "allow")
            return
        dp = getattr(ctx, "dataplane", None) if native_rate is not None else None
        seen = dp.forks_seen() if dp is not None else 0
        count_now = getattr(n, "count_tree", False) or self.tree.upper_bound() >= fb.max_procs
        live = self.tree.count() if count_now else None
        d = decide_fork(
            rule,
            forks_last_second=rate,
            live_procs=live,
            user_tasks=self.user_tasks.current(),
            nproc_limit=self.user_tasks.limit,
        )
        if dp is not None:  # the loop answers the next forks itself while they are clearly inside
            dp.fork_counted(None if live is None else live + (0 if d.blocked else 1), seen, self.user_tasks)
        if not d.violation:
            self.tree.allowed_fork()
            n.reply_continue()
            self._record_fork(ctx, n, "allow")
            return
        self._audit_fork(ctx, pid, d)
        if d.blocked:
            n.reply_error(errno.EAGAIN)
        else:
            self.tree.allowed_fork()
            n.reply_continue()
        self._record_fork(ctx, n, _verdict(d))

    def _audit_fork(self, ctx: SupervisorContext, pid: int, d: Decision) -> None:
        """Every refused (or, under alert, reported) fork is audited; a bomb's thousands are folded into
        at most one audit a second that says how many there were since the last one (a timer reports
        the last ones when the bomb stops)."""
        now = time.monotonic()
        with self._lock:
            self._forks_unreported += 1
            self._last_fork = (pid, d)
            wait = 1.0 - (now - self._last_fork_audit)
            if wait > 0:
                if self._fork_timer is None:
                    self._fork_timer = threading.Timer(wait, self._flush_fork_audit, (ctx,))
                    self._fork_timer.daemon = True
                    self._fork_timer.start()
                return
        self._flush_fork_audit(ctx)

    def _flush_fork_audit(self, ctx: SupervisorContext) -> None:
        with self._lock:
            self._fork_timer = None
            count, self._forks_unreported = self._forks_unreported, 0
            if not count or self._last_fork is None:
                return
            self._last_fork_audit = time.monotonic()
            pid, d = self._last_fork
        what = "refused" if d.blocked else "seen"
        _audit_proc(
            ctx,
            pid,
            type="fork_bomb",
            control=d.control,
            effect=d.effect,
            severity="high",
            message=f"fork bomb suspected: {d.reason} ({count} fork{'s' if count > 1 else ''} {what} since the "
            "last report)",
            extra={"forks": count},
        )

    def flush(self) -> None:
        """Report what is still folded (called when the app exits)."""
        t = self._fork_timer
        if t is not None:
            t.cancel()
        self._flush_fork_audit(self.ctx)

    @staticmethod
    def _record_fork(ctx: SupervisorContext, n: Notification, verdict: str) -> None:
        """Forensics: who forked (the child's pid shows up in its own exec/fork records, with ppid)."""
        pid = n.pid
        ctx.record("fork", pid=pid, tid=n.tid, ppid=_ppid(pid), syscall=n.syscall, verdict=verdict)

    def record_child(self, parent: int, child: int) -> None:
        """The ptrace tracer saw thread `parent` fork `child` (forensics: the tree's edges, exactly;
        the edge is from the forker's process, as the native tracer records it)."""
        self.ctx.record("child", pid=_thread_group(parent), child=child)

    def on_clone_untraced(self, n: Notification, ctx: SupervisorContext, flags: int) -> None:
        """clone(CLONE_UNTRACED) would give a child (or thread) the ptrace exec stop never sees: it is
        always refused, whatever the rule (no ordinary program asks for it), and always audited."""
        pid = n.pid
        info = ctx.proc(pid)
        n.reply_error(errno.EPERM)
        what = "thread" if flags & CLONE_THREAD else "process"
        _audit_proc(
            ctx,
            pid,
            info,
            type="process",
            control="kernel.clone_untraced",
            effect="prevent",
            severity="high",
            message=f"clone(CLONE_UNTRACED) of a {what} refused: it would escape the exec checks "
            f"(flags {flags:#x})",
        )
        ctx.record("fork", pid=pid, tid=n.tid, ppid=info.ppid, syscall="clone", verdict="prevent")

    # ---- bypass closers: always refused, always audited ------------------------------------------
    def on_ptrace(self, n: Notification, ctx: SupervisorContext) -> None:
        pid = n.pid
        info = ctx.proc(pid)  # read while the caller still waits for its answer
        what = n.syscall
        target = n.args[1] if what == "ptrace" else n.args[0]
        n.reply_error(errno.EPERM)
        _audit_proc(
            ctx,
            pid,
            info,
            type="process",
            control=f"kernel.{what}",
            effect="prevent",
            severity="high",
            message=f"{what} on pid {target & 0xFFFFFFFF} refused: it could tamper with supervised processes",
        )

    def on_io_uring(self, n: Notification, ctx: SupervisorContext) -> None:
        pid = n.pid
        n.reply_error(errno.EPERM)
        _audit_proc(
            ctx,
            pid,
            type="kernel",
            control="kernel.io_uring",
            effect="prevent",
            severity="medium",
            message="io_uring refused: its operations would bypass the syscall checks",
        )


def _audit_proc(ctx: SupervisorContext, pid: int, info: ProcInfo | None = None, **event: Any) -> None:
    """An audit about process `pid`, its identity (ppid, exe, argv, cwd) read from /proc unless given."""
    info = ctx.proc(pid) if info is None else info
    ctx.audit(
        AuditEvent(pid=pid, ppid=info.ppid, exe=info.exe, argv=info.argv or None, cwd=info.cwd, **event)
    )


def _thread_group(tid: int) -> int:
    """The process of thread `tid` (stopped at a ptrace event, so still there): a group leader's
    pidfd opens (two syscalls), any other thread's does not and /proc/<tid>/status says."""
    try:
        os.close(kpidfd.pidfd_open(tid))
        return tid
    except OSError:
        pass
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return tid


def _exec_key(pid: int, t: ExecTarget, d: Decision) -> tuple[object, ...]:
    ident: object = (t.st.st_dev, t.st.st_ino) if t.st is not None else t.exe
    return (pid, ident, tuple(t.argv[:64]), d.control, d.effect)


def _verdict(d: Decision) -> str:
    return "prevent" if d.blocked else ("alert" if d.audited else "allow")
