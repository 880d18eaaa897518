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


def container_records(log: ForensicLog, container_id: str, limit_bytes: int) -> list[dict[str, Any]]:
    """A container's trail as the console's process-tree builder reads records (garrison.defender.
    forensics.process_tree): `child` for each fork, `exec` for each program (with the gate's verdict
    and the connector's argv), oldest first, at most about `limit_bytes` of the most recent ones."""
    if not container_id or "/" in container_id or container_id.startswith("."):
        raise ValueError("no such container")
    lines: list[bytes] = []
    path = log.path(container_id)
    for p in (path.with_suffix(".jsonl.1"), path):
        with contextlib.suppress(FileNotFoundError), open(p, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - limit_bytes))
            lines += f.read().splitlines()
    out: list[dict[str, Any]] = []
    execs: dict[tuple[int, str], dict[str, Any]] = {}  # the gate's record, completed by the connector's
    total = 0
    for raw in reversed(lines):
        total += len(raw)
        if total > limit_bytes:
            break
        with contextlib.suppress(ValueError):
            r = json.loads(raw)
            if isinstance(r, dict):
                out.append(r)
    tree: list[dict[str, Any]] = []
    for r in reversed(out):
        pid, kind, t = r.get("pid"), r.get("kind"), r.get("time")
        if not isinstance(pid, int):
            continue
        if kind == "fork" and isinstance(r.get("ppid"), int):
            tree += [{"kind": "child", "pid": r["ppid"], "child": pid, "t": t},
                     {"kind": "fork", "pid": r["ppid"], "t": t}]
        elif kind == "exec_file":
            rec = {"kind": "exec", "pid": pid, "t": t, "exe": r.get("exe"),
                   "verdict": "allowed" if r.get("allowed") else "refused", "loader": r.get("loaded")}
            execs[(pid, str(r.get("exe")))] = rec
            tree.append(rec)
        elif kind == "exec":
            known = execs.pop((pid, str(r.get("exe"))), None)
            if known is not None:
                known["argv"] = r.get("argv")
            else:
                tree.append({"kind": "exec", "pid": pid, "ppid": r.get("ppid"), "t": t, "exe": r.get("exe"),
                             "argv": r.get("argv")})
    return tree
