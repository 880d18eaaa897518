"""Discovering app containers on a Diego cell as Garden creates them.

Garden runs each container with runc; runc keeps one state directory per container under its root
(`/run/runc` for plain runc, `/run/containerd/runc/garden` when Garden drives containerd). From the
state we take the init pid and the root filesystem; the overlay mount of that root gives the layers
(lower = rootfs image, upper = what was written into the container: the droplet, then anything the
app writes). The CF identity comes from the environment of the app process Garden starts in the
container (`VCAP_APPLICATION`, `CF_INSTANCE_*`); the time that process started is the line after
which a new executable in the upper layer is drift."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from garrison.channel.identity import hello_from_env
from garrison.channel.protocol import Hello

RUNC_ROOTS = ("/run/runc", "/run/containerd/runc/garden")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Layers:
    """The overlay under a container's root: read-only lower dirs and the writable upper dir."""

    dev: int
    lower: list[str]
    upper: str | None


@dataclass(frozen=True)
class Mount:
    """A mount of the container's own mount namespace other than its root, as exec can reach it."""

    mnt_id: int
    point: str  # inside the container
    fstype: str
    read_only: bool


# pseudo file systems: nothing on them can be executed as a program
_NO_PROGRAMS = {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "securityfs", "debugfs", "tracefs",
                "bpf", "pstore", "configfs", "fusectl", "binfmt_misc", "hugetlbfs", "nsfs"}


def exec_mounts(pid: int) -> list[Mount]:
    """Mounts of `pid`'s mount namespace, other than its root, from which a program could run (not
    mounted noexec, not a pseudo file system)."""
    try:
        text = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        pre, _, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if len(fields) < 6 or not tail:
            continue
        point, opts = _unescape(fields[4]), fields[5].split(",")
        if point == "/" or "noexec" in opts or tail[0] in _NO_PROGRAMS:
            continue
        out.append(Mount(int(fields[0]), point, tail[0], "ro" in opts))
    return out


@dataclass
class Container:
    id: str
    init_pid: int
    rootfs: str
    runc_root: str
    layers: Layers | None = None
    identity: Hello | None = None
    app_pid: int | None = None
    app_started: float | None = None  # wall-clock seconds when the app process started
    cgroup: dict[str, str] = field(default_factory=dict)  # controller ("pids", or "" for v2) -> path

    @property
    def name(self) -> str:
        ident = self.identity
        if ident and ident.app_name:
            return f"{ident.org}/{ident.space}/{ident.app_name}#{ident.instance}"
        return self.id


def _mountinfo() -> list[tuple[int, str, str, str]]:
    """(st_dev, mount point, fs type, super options) of every mount in our namespace."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        major, minor = (int(x) for x in fields[2].split(":"))
        out.append((os.makedev(major, minor), _unescape(fields[4]), tail[0], tail[2]))
    return out


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def overlay_layers(rootfs: str, mounts: list[tuple[int, str, str, str]] | None = None) -> Layers | None:
    """The overlay layers mounted at `rootfs` (None when it is not an overlay); `mounts` is our
    mount table when the caller already read it."""
    try:
        dev = os.stat(rootfs).st_dev
    except OSError:
        return None
    for mdev, point, fstype, opts in reversed(mounts if mounts is not None else _mountinfo()):
        if point != rootfs or fstype != "overlay" or mdev != dev:
            continue
        lower: list[str] = []
        upper = None
        for opt in opts.split(","):
            key, _, value = opt.partition("=")
            if key == "lowerdir":
                lower = [_unescape(p) for p in value.split(":") if p]
            elif key == "upperdir":
                upper = _unescape(value)
        return Layers(dev=dev, lower=lower, upper=upper)
    return None


def _runc_state(state_dir: Path) -> tuple[int, str] | None:
    try:
        doc = json.loads((state_dir / "state.json").read_text())
    except (OSError, ValueError):
        return None
    pid = doc.get("init_process_pid")
    rootfs = (doc.get("config") or {}).get("rootfs")
    if not isinstance(pid, int) or not isinstance(rootfs, str):
        return None
    return pid, rootfs


def _cgroups(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        _hid, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_containers(roots: Iterable[str] = RUNC_ROOTS, known: dict[str, int] | None = None) -> dict[str, Container | None]:
    """Every running runc container under the given state roots. A container in `known` (id -> init
    pid) whose init is still alive maps to None: it is not read again (a cell holds hundreds)."""
    known = known or {}
    found: dict[str, Container | None] = {}
    mounts: list[tuple[int, str, str, str]] | None = None
    for root in roots:
        try:
            entries = list(os.scandir(root))
        except OSError:
            continue
        for entry in entries:
            if entry.name in known and _alive(known[entry.name]):
                found[entry.name] = None
                continue
            state = _runc_state(Path(entry.path)) if entry.is_dir() else None
            if state is None or not _alive(state[0]):
                continue
            pid, rootfs = state
            if mounts is None:
                mounts = _mountinfo()
            found[entry.name] = Container(id=entry.name, init_pid=pid, rootfs=rootfs, runc_root=root,
                                          layers=overlay_layers(rootfs, mounts), cgroup=_cgroups(pid))
    return found


def _ns(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def environment(pid: int) -> dict[str, str] | None:
    """A process's environment (None when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def _start_time(pid: int) -> float | None:
    """Wall-clock start of a process to one clock tick (its start ticks on the boot-time clock, not
    /proc/stat's btime, which is rounded to the second)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / _CLK_TCK)


def find_app_processes(containers: list[Container]) -> dict[str, tuple[int, Hello, float]]:
    """For each container (by id), the first process of it (its pid and mount namespaces: a container
    sharing the cell's pid namespace is still told apart by its mount namespace) with a CF environment
    (Garden's `run` of the app), with the identity it carries and when it started. One pass over
    /proc for all of them."""
    wanted: dict[tuple[str, str], str] = {}
    for c in containers:
        ns, mnt = _ns(c.init_pid, "pid"), _ns(c.init_pid, "mnt")
        if ns is not None and mnt is not None:
            wanted[(ns, mnt)] = c.id
    best: dict[str, tuple[int, Hello, float]] = {}
    if not wanted:
        return best
    pid_namespaces = {ns for ns, _mnt in wanted}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        ns = _ns(pid, "pid")
        if ns not in pid_namespaces:
            continue
        cid = wanted.get((ns, _ns(pid, "mnt") or ""))
        if cid is None:
            continue
        env = environment(pid)
        if not env or "VCAP_APPLICATION" not in env:
            continue
        started = _start_time(pid)
        if started is None:
            continue
        if cid not in best or started < best[cid][2]:
            best[cid] = (pid, hello_from_env(env), started)
    return best
