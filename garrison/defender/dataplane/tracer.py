"""NativeExecTracer: the ptrace exec stop (exec_tracer.ExecTracer's contract) with its loop in C.

The C thread is the tracer and the defender's only waiter: it continues fork, clone and signal stops
itself, turns fork events into "child" forensic lines, and lets an exec stop go on by itself when
the process controls already let that very exec go on (a verdict cache they teach through
NativeDataplane.remember_exec_stop). Every other exec stop is handed to this module's thread, which
runs the same check as the Python tracer (ProcessControls.check_exec_stop) and answers kill or go on
while the C thread waits, as the Python tracer's own loop did.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from garrison.kernel import ptrace

log = logging.getLogger(__name__)


class NativeExecTracer:
    def __init__(self, dataplane: Any, on_exec: Callable[[int], bool]) -> None:
        from garrison.defender.dataplane import _native  # type: ignore[attr-defined]

        self.on_exec = on_exec
        self._tracer = _native.Tracer(dataplane.loop)
        dataplane.attach_tracer(self._tracer)  # rule changes set its mode and clear its verdicts
        self.app_pid = 0
        self.app_status: int | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="garrison-ptrace", daemon=True)

    @property
    def execs(self) -> int:
        return int(self._tracer.stats()["stop_execs"])

    def start(self) -> None:
        """From an unrestricted thread (the spawn helper that attaches has the app's filter)."""
        self._tracer.start()
        self._thread.start()

    def attach(self, pid: int, release_fd: int) -> None:
        """Seize the app from the C tracer thread, which then releases the child to exec."""
        self.app_pid = pid
        self._tracer.attach(pid, release_fd, ptrace.EXEC_TRACE_OPTIONS)

    def _serve(self) -> None:
        t = self._tracer
        while True:
            try:
                pid = t.take(-1)
            except EOFError:
                break
            if pid is None:
                continue
            kill = True
            try:
                kill = bool(self.on_exec(pid))
            except Exception:
                log.exception("exec check failed; killing to stay fail-closed")
            t.answer(pid, kill)
        self.app_status = t.app_status()
        self.done.set()
