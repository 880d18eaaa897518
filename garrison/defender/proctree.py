"""Counting the live processes of the app tree on every fork, cheaply, for the fork-bomb guard.

The app tree is every descendant of the defender (a child subreaper: orphans come back to it, so a
process once in the tree stays there until it exits). No notification tells the supervisor the new
child's pid or when a process exits, so the count keeps an upper bound instead: the processes found
at the last count plus every fork allowed since. Only when that bound reaches the cap is the tree
counted for real — one listing of /proc, and a read of /proc/<pid>/stat only for pids not seen
before. (/proc/<pid>/task/<tid>/children would be cheaper but needs CONFIG_PROC_CHILDREN, which this
kernel lacks; cgroup pids.current needs a delegated cgroup.) A fork never passes unseen: the bound is
never below the real count.

RLIMIT_NPROC (non-root, prevent) is a backstop with headroom above the cap; it counts *tasks* of the
real uid (threads too, and processes outside the tree), so the kernel can still refuse first. The
guard then counts the uid's tasks (at most every RLIMIT_SCAN_S while forks happen) and refuses and
audits forks itself once the limit is reached: the kernel's EAGAIN never goes unreported.
"""

from __future__ import annotations

import os
import threading
import time

OUTSIDE_TTL_S = 5.0  # pids found outside the tree are re-checked after this (pid reuse)
RLIMIT_SCAN_S = 0.1


def nproc_limit(tasks_at_start: int, max_procs: int) -> int:
    """RLIMIT_NPROC for the app's uid: a backstop above the guard's own cap (it counts threads too)."""
    return tasks_at_start + max_procs + max(64, max_procs)


def stat_fields(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat fields after the comm field (state, ppid, ...), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read(1024)
        return raw[raw.rindex(b")") + 2 :].split()
    except (OSError, ValueError):
        return None


def user_tasks(uid: int) -> int:
    """Tasks (threads) of all processes owned by `uid`, as RLIMIT_NPROC counts them."""
    n = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
        except OSError:
            continue
        f = stat_fields(int(name))
        if f is not None and len(f) > 17:
            n += int(f[17])  # num_threads
    return n


class AppTree:
    def __init__(self, root_pid: int | None = None) -> None:
        self.root = os.getpid() if root_pid is None else root_pid
        self._known: dict[int, int] = {}  # pid → ppid, processes of the tree at the last count
        self._outside: set[int] = set()
        self._outside_at = 0.0
        self.pending = 0  # forks allowed since the last count
        self._stale = False
        self._lock = threading.Lock()

    def upper_bound(self) -> int:
        return len(self._known) + self.pending if not self._stale else 1 << 62

    def invalidate(self) -> None:
        """Forks may have passed uncounted (a policy without the guard, answered by the native data
        plane): the next fork counts for real."""
        self._stale = True

    def allowed_fork(self) -> None:
        with self._lock:
            self.pending += 1

    def count(self) -> int:
        """The exact number of live processes in the tree now (zombies included, as the kernel does)."""
        with self._lock:
            now = time.monotonic()
            if now - self._outside_at > OUTSIDE_TTL_S:
                self._outside, self._outside_at = set(), now
            live = {int(n) for n in os.listdir("/proc") if n.isdigit()}
            known = {p: pp for p, pp in self._known.items() if p in live}
            outside = self._outside & live
            parents: dict[int, int] = {}
            for p in live:
                if p in known or p in outside or p == self.root:
                    continue
                f = stat_fields(p)
                if f is not None and len(f) > 1:
                    parents[p] = int(f[1])
            grew = True
            while grew:  # a child may be listed before its parent was classified
                grew = False
                for p, pp in list(parents.items()):
                    if pp == self.root or pp in known:
                        known[p] = pp
                        del parents[p]
                        grew = True
            self._known, self._outside, self.pending = known, outside | set(parents), 0
            self._stale = False
            return len(known)

    def pids(self) -> set[int]:
        return set(self._known)


class UserTasks:
    """The app uid's task count against its RLIMIT_NPROC, refreshed at most every RLIMIT_SCAN_S."""

    def __init__(self, uid: int, limit: int | None) -> None:
        self.uid = uid
        self.limit = limit
        self._at = 0.0
        self._tasks = 0
        self._lock = threading.Lock()

    def snapshot(self) -> tuple[int, float]:
        """(tasks, time.monotonic() when they were read): what current() answers until RLIMIT_SCAN_S."""
        with self._lock:
            return self._tasks, self._at

    def current(self) -> int | None:
        """Tasks of the uid (possibly RLIMIT_SCAN_S old), None when no limit is in force."""
        if not self.limit:
            return None
        now = time.monotonic()
        with self._lock:
            if now - self._at >= RLIMIT_SCAN_S:
                self._tasks, self._at = user_tasks(self.uid), now
            return self._tasks
