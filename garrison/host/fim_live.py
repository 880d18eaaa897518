"""Live file-integrity events: fanotify FID mode on each monitored filesystem (race-free attribution
of the pid that made the change), inotify as the fallback. Each change is judged against the
baseline; the same state is reported once."""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable

from garrison.host.fim import (
    Baseline,
    FileState,
    Watchlist,
    change_event,
    compare,
    file_state,
    rescan,
    who_is,
)
from garrison.host.model import HostEvent
from garrison.kernel import fanotify, inotify


class LiveMonitor:
    """Watches the watchlist's filesystems and calls `emit` for each change against the baseline."""

    def __init__(
        self, baseline: Baseline, watch: Watchlist, emit: Callable[[HostEvent], None],
        host: str | None = None, force_inotify: bool = False,
    ) -> None:
        self.baseline, self.watch, self.emit = baseline, watch, emit
        self.host = host or socket.gethostname()
        self._reported: dict[str, FileState | None] = {}
        self._fan: fanotify.FanotifyFid | None = None
        self._ino: inotify.Inotify | None = None
        self.mechanism = ""
        why = "inotify forced" if force_inotify else fanotify.available()
        if why is None:
            self._fan = fanotify.FanotifyFid()
            for root in watch.roots:
                if os.path.lexists(root):
                    self._fan.mark_filesystem(root)
            self.mechanism = "fanotify (FAN_MARK_FILESYSTEM, FAN_REPORT_DFID_NAME): pid of the writer known"
        else:
            self._ino = inotify.Inotify()
            for root in watch.roots:
                if os.path.lexists(root):
                    self._ino.watch_tree(root)
            self.mechanism = f"inotify (fanotify unavailable: {why}): the writer's pid is not known"

    @property
    def fd(self) -> int:
        return self._fan.fd if self._fan else self._ino.fd  # type: ignore[union-attr]

    def close(self) -> None:
        if self._fan:
            self._fan.close()
        if self._ino:
            self._ino.close()

    def poll(self, timeout: float = 0.5) -> int:
        """Wait up to `timeout` for events, judge them, emit changes; returns how many were emitted."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return 0
        touched: dict[str, int | None] = {}
        whos: dict[int, dict[str, str]] = {}
        overflow = False
        if self._fan:
            for ev in self._fan.read():
                overflow |= ev.overflow
                path = ev.path
                if path and self.watch.covers(path):
                    touched[path] = ev.pid
                    if ev.pid not in whos:  # now, before the writer may exit
                        whos[ev.pid] = who_is(ev.pid)
        else:
            for mask, path in self._ino.read():  # type: ignore[union-attr]
                overflow |= bool(mask & inotify.IN_Q_OVERFLOW)
                if self.watch.covers(path):
                    touched.setdefault(path, None)
        emitted = self._overflow() if overflow else 0
        for path, pid in touched.items():
            new = file_state(path)
            last = self._reported[path] if path in self._reported else self.baseline.get(path)
            diff = compare(path, last, new)
            if diff is None:
                continue
            self._reported[path] = new
            self.emit(change_event(self.host, path, diff[0], diff[1], self.baseline.get(path), new, pid,
                                   whos.get(pid) if pid else None))
            emitted += 1
        return emitted

    def _overflow(self) -> int:
        """Events were lost: say so, then find what changed by a rescan against the baseline."""
        self.emit(HostEvent(
            host=self.host, type="fim", action="overflow", severity="high",
            message="file-integrity event queue overflowed: rescanning against the baseline",
        ))
        emitted = 1
        for ev in rescan(self.baseline, self.watch, self.host):
            if not ev.path:
                continue
            state = file_state(ev.path)  # hashed once per path, not once per comparison
            if ev.path not in self._reported or self._reported[ev.path] != state:
                self._reported[ev.path] = state
                self.emit(ev)
                emitted += 1
        return emitted

    def run(self, until: Callable[[], bool] = lambda: False, timeout: float = 0.5) -> None:
        while not until():
            self.poll(timeout)
            time.sleep(0)
