"""Port-scan detection: distinct (host, port) destinations per process over a sliding window."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from garrison.policy.model import PortScanDetection


@dataclass
class _Window:
    seen: dict[tuple[str, int], float] = field(default_factory=dict)  # dest → last time
    order: deque[tuple[float, tuple[str, int]]] = field(default_factory=deque)
    alerted: bool = False


@dataclass(frozen=True)
class ScanVerdict:
    distinct: int
    scanning: bool  # at or over the threshold in the current window
    first: bool  # this attempt crossed the threshold (audit once per crossing)
    new_dest: bool  # the destination was not seen in the window


class PortScanTracker:
    """Bounded per-process state; a process dropping back under the threshold re-arms the alert."""

    def __init__(self, max_procs: int = 4096) -> None:
        self._procs: dict[int, _Window] = {}
        self._lock = threading.Lock()
        self._max_procs = max_procs

    def record(
        self, pid: int, ip: str, port: int, cfg: PortScanDetection, now: float | None = None
    ) -> ScanVerdict:
        now = time.monotonic() if now is None else now
        key = (ip, port)
        with self._lock:
            w = self._procs.get(pid)
            if w is None:
                if len(self._procs) >= self._max_procs:
                    self._procs.pop(next(iter(self._procs)))
                w = self._procs[pid] = _Window()
            horizon = now - cfg.window_s
            while w.order and w.order[0][0] < horizon:
                t, dest = w.order.popleft()
                if w.seen.get(dest) == t:
                    del w.seen[dest]
            new = key not in w.seen
            w.seen[key] = now
            w.order.append((now, key))
            if len(w.order) > 4 * len(w.seen) + 64:  # repeated destinations: compact
                w.order = deque(sorted((t, d) for d, t in w.seen.items()))
            n = len(w.seen)
            scanning = n >= cfg.threshold
            first = scanning and not w.alerted
            w.alerted = scanning
            return ScanVerdict(n, scanning, first, new)

    def forget(self, pid: int) -> None:
        with self._lock:
            self._procs.pop(pid, None)
