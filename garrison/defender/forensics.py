"""A bounded on-disk ring of process and network activity, for incident forensics.

Exec and fork records carry pid and ppid (and, where the ptrace exec stop runs, `child` records name
each new process), so `process_tree` can rebuild who started what for an incident.

Two JSON-lines files in DATA_FOLDER: the current one and the previous one. When the current file
passes half the budget it replaces the previous one, so disk use stays under `max_bytes` while the
most recent activity is always kept. Writes are buffered and flushed by the supervisor's clock.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, TextIO

DEFAULT_MAX_BYTES = 8 << 20


def open_private(path: Path) -> TextIO:
    """Append-open with mode 0600 like the defender's other data files (argv and network activity can
    hold secrets); a file left 0644 by an older version is tightened."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return open(fd, "a", encoding="utf-8")


class ForensicRing:
    def __init__(
        self, folder: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, name: str = "forensics"
    ) -> None:
        self.folder = Path(folder)
        self.current = self.folder / f"{name}.jsonl"
        self.previous = self.folder / f"{name}.1.jsonl"
        self.half = max(4096, max_bytes // 2)
        self._lock = threading.Lock()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._f = open_private(self.current)
        self._size = self._f.tell()

    def add(self, kind: str, **facts: Any) -> None:
        line = json.dumps({"t": round(time.time(), 6), "kind": kind, **facts}, default=str) + "\n"
        with self._lock:
            self._f.write(line)
            self._size += len(line)
            if self._size >= self.half:
                self._rotate()

    def add_lines(self, lines: str) -> None:
        """Append JSON lines formatted elsewhere (the native data plane's allowed-activity records)."""
        with self._lock:
            self._f.write(lines)
            self._size += len(lines)
            if self._size >= self.half:
                self._rotate()

    def _rotate(self) -> None:
        self._f.close()
        os.replace(self.current, self.previous)
        self._f = open_private(self.current)
        self._size = 0

    def flush(self) -> None:
        with self._lock:
            self._f.flush()

    def close(self) -> None:
        with self._lock:
            self._f.close()

    def snapshot(self, limit_bytes: int = 4 << 20) -> list[dict[str, Any]]:
        """Oldest-first records, at most about `limit_bytes` of the most recent ones (for upload)."""
        self.flush()
        lines: list[str] = []
        for p in (self.previous, self.current):
            try:
                lines += p.read_text(encoding="utf-8", errors="replace").splitlines()
            except FileNotFoundError:
                continue
        out: list[dict[str, Any]] = []
        total = 0
        for line in reversed(lines):
            total += len(line)
            if total > limit_bytes:
                break
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn last line after a crash
        out.reverse()
        return out


TREE_KINDS = ("exec", "fork", "child")
MAX_TIMES = 20


def process_tree(records: list[dict[str, Any]], focus_pid: int | None = None) -> list[dict[str, Any]]:
    """Rebuild the process tree from forensic records (oldest first). Each node: pid, ppid, the
    programs it ran (exec records), how many forks it asked for and when (`fork_times`, the first
    MAX_TIMES), when it was started where a `child` record says so, and the audits about it. With
    `focus_pid` (an incident's pid) only its branch is kept: its ancestors (each with only the child
    on the way down) and its whole subtree. A recycled pid can make a loop: such an edge is dropped."""
    nodes: dict[int, dict[str, Any]] = {}
    first: dict[int, float] = {}  # pid -> time of its first record: children are listed in that order

    def node(pid: int) -> dict[str, Any]:
        n = nodes.get(pid)
        if n is None:
            n = nodes[pid] = {
                "pid": pid, "ppid": None, "started": None, "execs": [], "forks": 0, "fork_times": [],
                "audits": [], "children": [],
            }  # fmt: skip
        return n

    for r in records:
        if not isinstance(r, dict):
            continue
        pid, kind = r.get("pid"), r.get("kind")
        if not isinstance(pid, int) or isinstance(pid, bool):
            continue
        if kind == "child":  # from the tracer: `pid` forked `child`
            child = r.get("child")
            if isinstance(child, int) and child != pid:
                node(pid)
                c = node(child)
                c["ppid"] = c["ppid"] if c["ppid"] is not None else pid
                if c["started"] is None and isinstance(r.get("t"), int | float):
                    c["started"] = r["t"]
                    first[child] = min(first.get(child, r["t"]), r["t"])
            continue
        if kind not in (*TREE_KINDS, "audit"):
            continue
        n = node(pid)
        if isinstance(r.get("t"), int | float):
            first[pid] = min(first.get(pid, r["t"]), r["t"])
        ppid = r.get("ppid")
        if kind in TREE_KINDS and isinstance(ppid, int) and ppid != pid and n["ppid"] is None:
            n["ppid"] = ppid
        if kind == "exec":
            n["execs"].append({k: r.get(k) for k in ("t", "exe", "argv", "verdict", "loader") if r.get(k)})
        elif kind == "fork":
            n["forks"] += 1
            if len(n["fork_times"]) < MAX_TIMES and isinstance(r.get("t"), int | float):
                n["fork_times"].append(r["t"])
        elif kind == "audit":
            n["audits"].append(
                {k: r.get(k) for k in ("t", "type", "control", "effect", "message", "exe") if r.get(k)}
            )
    roots: list[dict[str, Any]] = []
    for pid, n in nodes.items():
        parent = nodes.get(n["ppid"]) if n["ppid"] is not None else None
        if parent is None or _is_ancestor(nodes, pid, n["ppid"]):
            roots.append(n)
        else:
            parent["children"].append(n)
    for n in nodes.values():
        n["children"].sort(key=lambda c: (first.get(c["pid"], float("inf")), c["pid"]))
    if focus_pid is None or focus_pid not in nodes:
        return roots if focus_pid is None else []
    branch, cur = nodes[focus_pid], focus_pid
    seen = {focus_pid}
    p = branch["ppid"]
    # by identity: `branch` is a trimmed copy from the second step on, never equal to the node itself
    while p in nodes and p not in seen and any(c is nodes[cur] for c in nodes[p]["children"]):
        seen.add(p)
        branch, cur = {**nodes[p], "children": [branch]}, p
        p = nodes[p]["ppid"]
    return [branch]


def _is_ancestor(nodes: dict[int, dict[str, Any]], pid: int, start: int | None) -> bool:
    """Is `pid` reached walking up from `start`? (then linking pid under start would close a loop)"""
    seen: set[int] = set()
    while start is not None and start in nodes and start not in seen:
        if start == pid:
            return True
        seen.add(start)
        start = nodes[start]["ppid"]
    return False
