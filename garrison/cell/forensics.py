"""Forensic trail per container: processes (fork with parent, exec with argv from the proc connector —
lost for a process that exits before it is read — and, from the exec gate, the file every exec ran,
recorded while the exec was held) and new outbound flows from NFLOG, as JSON lines in one 0600 file per container,
so an incident's process tree and connections can be rebuilt after the container is gone."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

MAX_BYTES = 16 * 1024 * 1024  # per container file; the previous one is kept as .1


class ForensicLog:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        self._lock = threading.Lock()

    def path(self, container_id: str) -> Path:
        return self.dir / f"{container_id}.jsonl"

    def record(self, container_id: str, kind: str, **fields: Any) -> None:
        line = json.dumps({"time": time.time(), "kind": kind, **fields}, separators=(",", ":")) + "\n"
        path = self.path(container_id)
        with self._lock:
            try:
                if path.stat().st_size > MAX_BYTES:
                    os.replace(path, path.with_suffix(".jsonl.1"))
            except FileNotFoundError:
                pass
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)


def process_facts(pid: int) -> dict[str, Any]:
    """argv, executable and parent of a process that just exec'd (empty fields when it is gone)."""
    out: dict[str, Any] = {}
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        out["argv"] = [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")][:256]
    except OSError:
        pass
    with contextlib.suppress(OSError):
        out["exe"] = os.readlink(f"/proc/{pid}/exe")
    with contextlib.suppress(OSError, IndexError, ValueError):
        out["ppid"] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return out
