"""Code run in a container without an exec the fanotify gate could hold, seen from the kernel
(garrison/kernel/exec_watch.bpf.c: tracepoints): memfd executables, and files mapped
executable whose data changed after the app started (LD_PRELOAD, dlopen of a dropped library), the
latter refused by killing the caller inside the call. Mechanism only: the defender says which mount
namespaces are watched and what their rule does."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from garrison.kernel.bpf import BpfObject, object_path
from garrison.kernel.bpf import unavailable as bpf_unavailable

OBJECT = "exec_watch"
EV_MFD_EXEC, EV_MEMFD_RUN, EV_MAPPED_DRIFT = 1, 2, 3
_EVENT = struct.Struct("=IIIIQ16s64s64s")  # kind, tgid, mount ns, denied, inode, comm, name, its directory
_U32 = struct.Struct("=I")
_SCOPE = struct.Struct("=QII")  # app start (ns since the epoch; 0: no drift line yet), flags, pad
SCOPE_DENY = 1


@dataclass(frozen=True)
class WatchEvent:
    """`kind` EV_MFD_EXEC: memfd_create(MFD_EXEC) called (`name` as given); EV_MEMFD_RUN: a program run
    from a memfd (`name` "memfd:..."); EV_MAPPED_DRIFT: a file changed after the app started mapped
    executable (`name` and `directory`: its last two path components; `killed`: under prevention)."""

    kind: int
    pid: int
    mntns: int
    killed: bool
    ino: int
    comm: str
    name: str
    directory: str


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


class ExecWatch:
    """The loaded programs; `watch` a container's mount namespace, `consume()` when `ring_fd` is readable."""

    def __init__(self, on_event: Callable[[WatchEvent], None]) -> None:
        self._on_event = on_event
        self._obj = BpfObject(OBJECT, self._record)
        self.ring_fd = self._obj.ring_fd

    def _record(self, raw: bytes) -> None:
        if len(raw) < _EVENT.size:
            return
        kind, tgid, mntns, denied, ino, comm, name, directory = _EVENT.unpack_from(raw)
        self._on_event(WatchEvent(kind, tgid, mntns, bool(denied), ino, _text(comm), _text(name), _text(directory)))

    def watch(self, mntns: int, *, app_start_ns: int = 0, deny: bool = False) -> None:
        """Watch this mount namespace; with `app_start_ns`, files mapped executable whose data changed
        since then are drift (the caller killed when `deny`)."""
        self._obj.update("scopes", _U32.pack(mntns), _SCOPE.pack(app_start_ns, SCOPE_DENY if deny else 0, 0))

    def unwatch(self, mntns: int) -> None:
        self._obj.delete("scopes", _U32.pack(mntns))

    def consume(self) -> int:
        return self._obj.consume()

    def close(self) -> None:
        self._obj.close()


def object_built() -> bool:
    return object_path(OBJECT).exists()


def unavailable() -> str | None:
    """Why the watch cannot run here (None: it can be tried)."""
    if not any(Path(d, "events").is_dir() for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")):
        return "tracefs is not mounted (/sys/kernel/tracing): tracepoint programs cannot be attached"
    return bpf_unavailable(OBJECT)
