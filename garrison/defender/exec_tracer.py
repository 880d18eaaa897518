"""Race-free exec check where Landlock is unavailable (Cloud Foundry's Garden blocks it): every app
process is traced (PTRACE_SEIZE, inherited by forks and threads) only for its exec event. At that stop
the new image is loaded but has not run an instruction, its argv is in kernel-copied memory, and
/proc/<pid>/exe names the exact inode: the policy is checked again and the process killed on prevent.
A thread racing the seccomp pre-check therefore gains nothing. EXITKILL: the app tree dies with us.

This thread is the only waiter (ptrace events and child exits share waitpid); the main thread waits
on `done` instead.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import signal
import threading
from collections.abc import Callable

from garrison.kernel import ptrace

log = logging.getLogger(__name__)

_STOP_SIGNALS = {signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}


class ExecTracer:
    def __init__(
        self, on_exec: Callable[[int], bool], on_fork: Callable[[int, int], None] | None = None
    ) -> None:
        """`on_exec(pid)` returns True when the freshly exec'd process must be killed; `on_fork(parent,
        child)` hears of every new process (not thread) of the tree (forensics)."""
        self.on_exec = on_exec
        self.on_fork = on_fork
        self.app_pid = 0
        self.app_status: int | None = None
        self.done = threading.Event()
        self.execs = 0
        self.stops = 0  # every ptrace stop (exec, fork, clone, group, signal): each a round trip for the app
        self._attach: queue.Queue[tuple[int, int]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="garrison-ptrace", daemon=True)
        self._attached = threading.Event()
        self.attach_error: OSError | None = None

    def start(self) -> None:
        self._thread.start()

    def attach(self, pid: int, release_fd: int) -> None:
        """Seize the app (from the tracer thread: ptrace requests must come from the tracer), then
        write to `release_fd` so the child goes on to exec."""
        self.app_pid = pid
        self._attach.put((pid, release_fd))
        self._attached.wait()
        if self.attach_error is not None:
            raise self.attach_error

    def _run(self) -> None:
        pid, release = self._attach.get()
        try:
            ptrace.seize(pid)
        except OSError as exc:
            self.attach_error = exc
        finally:
            os.write(release, b"g")
            os.close(release)
            self._attached.set()
        try:
            self._loop()
        finally:
            self.done.set()

    def _loop(self) -> None:
        while True:
            try:
                pid, status = ptrace.wait_any()
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                if pid == self.app_pid:
                    self.app_status = status
                    return
                continue
            if not os.WIFSTOPPED(status):
                continue
            self.stops += 1
            sig = os.WSTOPSIG(status)
            event = ptrace.event_of(status)
            try:
                if event == ptrace.EVENT_EXEC:
                    self.execs += 1
                    kill = False
                    try:
                        kill = self.on_exec(pid)
                    except Exception:
                        log.exception("exec check failed; killing to stay fail-closed")
                        kill = True
                    if kill:
                        os.kill(pid, signal.SIGKILL)
                    ptrace.cont(pid)
                elif event == ptrace.EVENT_STOP:
                    if sig in _STOP_SIGNALS:
                        ptrace.listen(pid)  # a real group-stop: stay stopped until SIGCONT
                    else:
                        ptrace.cont(pid)
                elif event in (ptrace.EVENT_FORK, ptrace.EVENT_VFORK):
                    if self.on_fork is not None:
                        try:
                            self.on_fork(pid, ptrace.geteventmsg(pid))
                        except Exception:
                            log.exception("fork record failed")
                    ptrace.cont(pid)
                elif event:
                    ptrace.cont(pid)  # clone events (threads)
                else:
                    ptrace.cont(pid, sig)  # signal-delivery-stop: deliver it
            except OSError as exc:
                if exc.errno != errno.ESRCH:
                    log.warning("ptrace on %d: %s", pid, exc)
