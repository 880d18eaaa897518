"""Fork-bomb guard for a container with the pids cgroup controller: the kernel refuses a fork beyond
`pids.max` (EAGAIN) with nothing trapped in user space; `pids.events` counts the refusals, which the
cell defender turns into audits."""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def pids_dir(cgroup: dict[str, str]) -> Path | None:
    """The container's pids cgroup directory on a v1 (`pids` hierarchy) or v2 (unified) host."""
    if "pids" in cgroup:
        path = CGROUP_ROOT / "pids" / cgroup["pids"].lstrip("/")
        if (path / "pids.max").exists():
            return path
    if "" in cgroup:
        for base in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
            path = base / cgroup[""].lstrip("/")
            if (path / "pids.max").exists():
                return path
    return None


def set_max(path: Path, limit: int) -> None:
    (path / "pids.max").write_text(f"{limit}\n")


def current(path: Path) -> int:
    try:
        return int((path / "pids.current").read_text())
    except (OSError, ValueError):
        return 0


def refusals(path: Path) -> int:
    """How many forks the kernel has refused for hitting pids.max (the `max` line of pids.events)."""
    try:
        for line in (path / "pids.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "max":
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def writable(path: Path) -> bool:
    return os.access(path / "pids.max", os.W_OK)
