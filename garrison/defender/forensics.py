"""A bounded on-disk ring of process and network activity, for incident forensics.

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
from typing import Any

DEFAULT_MAX_BYTES = 8 << 20


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
        self._f = open(self.current, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the ring
        self._size = self._f.tell()

    def add(self, kind: str, **facts: Any) -> None:
        line = json.dumps({"t": round(time.time(), 6), "kind": kind, **facts}, default=str) + "\n"
        with self._lock:
            self._f.write(line)
            self._size += len(line)
            if self._size >= self.half:
                self._rotate()

    def _rotate(self) -> None:
        self._f.close()
        os.replace(self.current, self.previous)
        self._f = open(self.current, "a", encoding="utf-8")  # noqa: SIM115
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
