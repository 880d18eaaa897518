"""memfd_create with MFD_NOEXEC_SEAL (6.3+): a memfd that can never become executable; memfd
executables reported from the kernel (tracepoint programs, garrison/kernel/memfd_watch.bpf.c)."""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from garrison.kernel._libc import syscall
from garrison.kernel.bpf import BpfObject, object_path
from garrison.kernel.bpf import unavailable as bpf_unavailable

MFD_CLOEXEC = 0x1
MFD_ALLOW_SEALING = 0x2
MFD_HUGETLB = 0x4
MFD_NOEXEC_SEAL = 0x8
MFD_EXEC = 0x10


def memfd_create(name: bytes, flags: int) -> int:
    return syscall("memfd_create", ctypes.c_char_p(name), flags)


def noexec_seal_available() -> bool:
    import os

    try:
        fd = memfd_create(b"garrison-probe", MFD_CLOEXEC | MFD_NOEXEC_SEAL)
    except OSError:
        return False
    os.close(fd)
    return True


def set_noexec_scope(pid: int, scope: int) -> None:
    """Set `vm.memfd_noexec` of the pid namespace `pid` lives in (6.3+; the sysctl applies to the
    writer's own pid namespace, so it is written by a child forked inside that namespace). 2: a memfd
    can never be made executable there (MFD_EXEC refused with EACCES, every memfd sealed noexec);
    child namespaces inherit it and cannot go lower. Raises RuntimeError with the reason."""
    import subprocess

    proc = subprocess.run(
        ["nsenter", "--target", str(pid), "--pid", "--", "/bin/sh", "-c",
         f"echo {int(scope)} > /proc/sys/vm/memfd_noexec"],
        capture_output=True, text=True, timeout=10,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"vm.memfd_noexec not set: {proc.stderr.strip() or proc.returncode}")


# -- memfd executables seen by the kernel (garrison/kernel/memfd_watch.bpf.c) ----------------------
WATCH_OBJECT = "memfd_watch"
EV_MFD_EXEC, EV_MEMFD_RUN = 1, 2
_EVENT = struct.Struct("=IIII16s64s")  # kind, tgid, mount namespace, flags, comm, memfd name
_U32 = struct.Struct("=I")


@dataclass(frozen=True)
class MemfdEvent:
    """`kind` EV_MFD_EXEC: memfd_create(MFD_EXEC) called (refused where vm.memfd_noexec = 2);
    EV_MEMFD_RUN: a program executed from a memfd. `mntns`: the caller's mount namespace (inode)."""

    kind: int
    pid: int
    mntns: int
    comm: str
    name: str


class MemfdWatch:
    """The tracepoint programs reporting memfd executables from the processes of watched mount
    namespaces (the containers): `watch`/`unwatch` them, `consume()` when `ring_fd` is readable."""

    def __init__(self, on_event: Callable[[MemfdEvent], None]) -> None:
        self._on_event = on_event
        self._obj = BpfObject(WATCH_OBJECT, self._record)
        self.ring_fd = self._obj.ring_fd

    def _record(self, raw: bytes) -> None:
        if len(raw) < _EVENT.size:
            return
        kind, tgid, mntns, _flags, comm, name = _EVENT.unpack_from(raw)
        self._on_event(MemfdEvent(kind, tgid, mntns, comm.split(b"\0", 1)[0].decode(errors="replace"),
                                  name.split(b"\0", 1)[0].decode(errors="replace")))

    def watch(self, mntns: int) -> None:
        self._obj.update("scopes", _U32.pack(mntns), _U32.pack(1))

    def unwatch(self, mntns: int) -> None:
        self._obj.delete("scopes", _U32.pack(mntns))

    def consume(self) -> int:
        return self._obj.consume()

    def close(self) -> None:
        self._obj.close()


def watch_unavailable() -> str | None:
    """Why memfd executables cannot be reported from the kernel here (None: they can be tried)."""
    if not any(Path(d, "events").is_dir() for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")):
        return "tracefs is not mounted (/sys/kernel/tracing): tracepoint programs cannot be attached"
    return bpf_unavailable(WATCH_OBJECT)


def object_built() -> bool:
    return object_path(WATCH_OBJECT).exists()
