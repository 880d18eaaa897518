"""What a container has that weakens its isolation: no user namespace (root inside = root of the
cell), namespaces shared with the cell, dangerous effective capabilities of the app process.
Observed from /proc; judged by the shared evaluator (`decide_privileges`)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from garrison.cell.containers import Container
from garrison.policy.evaluate import ContainerPrivileges

# linux/capability.h, in bit order
CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)


def capability_names(mask: int) -> frozenset[str]:
    return frozenset(name for bit, name in enumerate(CAPS) if mask >> bit & 1)


def _effective(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _same_ns(pid: int, kind: str) -> bool:
    return os.readlink(f"/proc/{pid}/ns/{kind}") == os.readlink(f"/proc/self/ns/{kind}")


def _root_is_host_root(pid: int) -> bool:
    """uid 0 of the container maps to uid 0 of the cell (no user namespace, or an identity map)."""
    for line in Path(f"/proc/{pid}/uid_map").read_text().splitlines():
        inside, outside, _count = (int(x) for x in line.split())
        if inside == 0 and outside == 0:
            return True
    return False


def observe(container: Container) -> ContainerPrivileges | None:
    """None when the container's processes are gone."""
    pid = container.init_pid
    try:
        return ContainerPrivileges(
            privileged=_root_is_host_root(pid),
            host_network=_same_ns(pid, "net"),
            host_pid=_same_ns(pid, "pid"),
            host_ipc=_same_ns(pid, "ipc"),
            host_mount=_same_ns(pid, "mnt"),
            capabilities=capability_names(_effective(container.app_pid or pid)),
        )
    except (OSError, ValueError):
        return None


def stop_processes(container: Container, procs_file: Path | None) -> int:
    """SIGKILL every process of the container (its cgroup's members, else its pid namespace's)."""
    pids: set[int] = set()
    if procs_file is not None:
        try:
            pids = {int(x) for x in procs_file.read_text().split()}
        except (OSError, ValueError):
            pids = set()
    if not pids:
        try:
            ns = os.readlink(f"/proc/{container.init_pid}/ns/pid")
        except OSError:
            return 0
        host_pid_ns = os.readlink("/proc/self/ns/pid")
        if ns == host_pid_ns:
            pids = {container.init_pid}  # shares the cell's pid namespace: never sweep the cell
        else:
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        if os.readlink(f"/proc/{entry.name}/ns/pid") == ns:
                            pids.add(int(entry.name))
                    except OSError:
                        continue
    killed = 0
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            continue
    return killed
