"""The rate half of the fork-bomb guard: forks per container over the last second, from the proc
connector (nothing trapped: the kernel reports forks after the fact; `pids.max` is the hard cap that
holds meanwhile). Crossing the rule's `max_forks_per_s` is audited; under prevent the container is
frozen (cgroup freezer), the burst's processes and everything they started are killed while nothing
can fork, and the container is thawed — the app's root process and the container's init are spared.
Times are CLOCK_BOOTTIME seconds, the clock of a process's start time in /proc/<pid>/stat."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from garrison.cell.pids import CGROUP_ROOT


@dataclass
class ForkRate:
    """Forks of one container in the last second: (time, child, parent)."""

    window_s: float = 1.0
    events: deque[tuple[float, int, int]] = field(default_factory=deque)
    tripped_at: float = 0.0
    burst_start: float = 0.0  # the first fork of the window that crossed the limit

    def record(self, now: float, child: int, parent: int) -> int:
        self.events.append((now, child, parent))
        while self.events and self.events[0][0] <= now - self.window_s:
            self.events.popleft()
        return len(self.events)

    def trip(self, now: float) -> None:
        self.tripped_at = now
        self.burst_start = self.events[0][0] if self.events else now

    def parents(self) -> Counter[int]:
        """How often each parent forked in the window."""
        return Counter(p for _t, _c, p in self.events)


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def boottime_of(monotonic_ns: int) -> float:
    """A kernel event's CLOCK_MONOTONIC stamp on the boot-time clock (they differ by time suspended)."""
    return monotonic_ns / 1e9 + (now() - time.clock_gettime(time.CLOCK_MONOTONIC))


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _started(pid: int) -> float | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def freezer_dir(cgroup: dict[str, str]) -> tuple[Path, bool] | None:
    """(the container's freezer cgroup, is it v2) on a v1 (`freezer` hierarchy) or v2 host."""
    if "freezer" in cgroup:
        path = CGROUP_ROOT / "freezer" / cgroup["freezer"].lstrip("/")
        if (path / "freezer.state").exists():
            return path, False
    if "" in cgroup:
        for base in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
            path = base / cgroup[""].lstrip("/")
            if (path / "cgroup.freeze").exists():
                return path, True
    return None


def set_frozen(path: Path, v2: bool, frozen: bool, timeout_s: float = 2.0) -> bool:
    """Freeze or thaw, waiting until the kernel reports it done (False: not within the timeout)."""
    if v2:
        (path / "cgroup.freeze").write_text("1" if frozen else "0")
    else:
        (path / "freezer.state").write_text("FROZEN" if frozen else "THAWED")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if v2:
            done = f"frozen {1 if frozen else 0}" in (path / "cgroup.events").read_text()
        else:
            done = (path / "freezer.state").read_text().strip() == ("FROZEN" if frozen else "THAWED")
        if done:
            return True
        time.sleep(0.005)
    return False


def _tree(members: list[int]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid in members:
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(pid)
    return children


def offending_subtree(members: list[int], since: float, parents: Counter[int], spare: set[int]) -> list[int]:
    """Processes to stop: those started since the burst began (a fork bomb's processes are reparented
    as their parents exit, so ancestry alone does not find them), those that forked more than once in
    the window, and all their descendants among the container's members — never the ones in `spare`.
    A process that forked once, e.g. an app starting a helper, is left alone; one it started during
    the burst is not."""
    roots = {p for p, n in parents.items() if n > 1} & set(members)
    for pid in members:
        started = _started(pid)
        if started is not None and started >= since - 1 / _CLK_TCK:
            roots.add(pid)
    children = _tree(members)
    out: list[int] = []
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        if pid not in spare:
            out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def members(path: Path) -> list[int]:
    try:
        return [int(x) for x in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def kill(pids: list[int]) -> int:
    n = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            n += 1
    return n
