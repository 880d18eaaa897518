"""fanotify in FID mode (directory handle + name per event): file-integrity events for a whole
filesystem with the pid that caused them. Mechanism only; what the events mean is decided elsewhere.

Needs CAP_SYS_ADMIN (root on a cell). Kernel 5.9+ for FAN_REPORT_DFID_NAME."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from garrison.kernel._libc import libc

# fanotify_init flags
FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_UNLIMITED_QUEUE = 0x10
FAN_REPORT_FID = 0x200
FAN_REPORT_DIR_FID = 0x400
FAN_REPORT_NAME = 0x800
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME

# fanotify_mark flags
FAN_MARK_ADD = 0x1
FAN_MARK_REMOVE = 0x2
FAN_MARK_MOUNT = 0x10
FAN_MARK_FILESYSTEM = 0x100

# event masks
FAN_MODIFY = 0x2
FAN_ATTRIB = 0x4
FAN_CLOSE_WRITE = 0x8
FAN_MOVED_FROM = 0x40
FAN_MOVED_TO = 0x80
FAN_CREATE = 0x100
FAN_DELETE = 0x200
FAN_DELETE_SELF = 0x400
FAN_MOVE_SELF = 0x800
FAN_Q_OVERFLOW = 0x4000
FAN_ONDIR = 0x40000000

FAN_EVENT_INFO_TYPE_FID = 1
FAN_EVENT_INFO_TYPE_DFID_NAME = 2
FAN_EVENT_INFO_TYPE_DFID = 3

INTEGRITY_MASK = (
    FAN_MODIFY | FAN_ATTRIB | FAN_CLOSE_WRITE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_CREATE | FAN_DELETE
)

_META = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_INFO_HDR = struct.Struct("=BBH")
_HANDLE_HDR = struct.Struct("=Ii")  # handle_bytes, handle_type

libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]

MASK_NAMES: dict[int, str] = {
    FAN_CREATE: "create",
    FAN_DELETE: "delete",
    FAN_MOVED_FROM: "moved_from",
    FAN_MOVED_TO: "moved_to",
    FAN_MODIFY: "modify",
    FAN_CLOSE_WRITE: "close_write",
    FAN_ATTRIB: "attrib",
}


@dataclass(frozen=True)
class FidEvent:
    """One FID-mode event: the directory it happened in, the entry name, who did it."""

    mask: int
    pid: int
    directory: str | None  # None when the directory is gone or not reachable from the mount fd
    name: str

    @property
    def path(self) -> str | None:
        if self.directory is None:
            return None
        return os.path.join(self.directory, self.name) if self.name and self.name != "." else self.directory

    @property
    def kinds(self) -> list[str]:
        return [n for bit, n in MASK_NAMES.items() if self.mask & bit]

    @property
    def overflow(self) -> bool:
        return bool(self.mask & FAN_Q_OVERFLOW)


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


class FanotifyFid:
    """A FID-mode fanotify group watching whole filesystems for integrity-relevant changes."""

    def __init__(self, *, nonblock: bool = True) -> None:
        flags = FAN_CLOEXEC | FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME | FAN_UNLIMITED_QUEUE
        if nonblock:
            flags |= FAN_NONBLOCK
        self.fd = _check(libc.fanotify_init(flags, os.O_RDONLY | os.O_LARGEFILE), "fanotify_init")
        self._mount_fds: dict[bytes, int] = {}  # fsid -> an fd on that filesystem, for open_by_handle_at

    def close(self) -> None:
        for fd in self._mount_fds.values():
            os.close(fd)
        self._mount_fds.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> FanotifyFid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def mark_filesystem(self, path: str, mask: int = INTEGRITY_MASK) -> None:
        """Watch every file of the filesystem holding `path` (and its directories' entries)."""
        _check(
            libc.fanotify_mark(
                self.fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, mask | FAN_ONDIR, -100, os.fsencode(path)
            ),
            f"fanotify_mark {path}",
        )
        fsid = _fsid_of(path)
        if fsid not in self._mount_fds:
            self._mount_fds[fsid] = os.open(
                path if os.path.isdir(path) else os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY
            )

    def read(self, bufsize: int = 65536) -> list[FidEvent]:
        """The events queued now ([] when none and non-blocking)."""
        try:
            data = os.read(self.fd, bufsize)
        except BlockingIOError:
            return []
        except OSError as exc:
            if exc.errno == errno.EINTR:
                return []
            raise
        return list(self._parse(data))

    def _parse(self, data: bytes) -> Iterator[FidEvent]:
        off = 0
        while off + _META.size <= len(data):
            event_len, _vers, _res, meta_len, mask, fd, pid = _META.unpack_from(data, off)
            if event_len < _META.size:
                break
            if fd >= 0:
                os.close(fd)
            directory, name = None, ""
            info = off + meta_len
            end = off + event_len
            while info + _INFO_HDR.size <= end:
                info_type, _pad, info_len = _INFO_HDR.unpack_from(data, info)
                if info_len == 0:
                    break
                if info_type in (FAN_EVENT_INFO_TYPE_DFID_NAME, FAN_EVENT_INFO_TYPE_DFID):
                    directory, name = self._resolve(data, info + _INFO_HDR.size, info + info_len, info_type)
                info += info_len
            yield FidEvent(mask=mask, pid=pid, directory=directory, name=name)
            off += event_len

    def _resolve(self, data: bytes, start: int, end: int, info_type: int) -> tuple[str | None, str]:
        fsid = data[start : start + 8]
        hstart = start + 8
        handle_bytes, _htype = _HANDLE_HDR.unpack_from(data, hstart)
        handle = data[hstart : hstart + _HANDLE_HDR.size + handle_bytes]
        name = ""
        if info_type == FAN_EVENT_INFO_TYPE_DFID_NAME:
            raw = data[hstart + _HANDLE_HDR.size + handle_bytes : end]
            name = os.fsdecode(raw.split(b"\0", 1)[0])
        mount_fd = self._mount_fds.get(fsid)
        if mount_fd is None:
            return None, name
        fd = libc.open_by_handle_at(mount_fd, handle, os.O_PATH)
        if fd < 0:
            return None, name
        try:
            return os.readlink(f"/proc/self/fd/{fd}"), name
        finally:
            os.close(fd)


def _fsid_of(path: str) -> bytes:
    """The fsid fanotify reports (statfs f_fsid), to find the mount fd for a handle."""

    class _Statfs(ctypes.Structure):
        _fields_ = [
            ("f_type", ctypes.c_long),
            ("f_bsize", ctypes.c_long),
            ("f_blocks", ctypes.c_ulong),
            ("f_bfree", ctypes.c_ulong),
            ("f_bavail", ctypes.c_ulong),
            ("f_files", ctypes.c_ulong),
            ("f_ffree", ctypes.c_ulong),
            ("f_fsid", ctypes.c_int * 2),
            ("f_namelen", ctypes.c_long),
            ("f_frsize", ctypes.c_long),
            ("f_flags", ctypes.c_long),
            ("f_spare", ctypes.c_long * 4),
        ]

    buf = _Statfs()
    _check(libc.statfs(os.fsencode(path), ctypes.byref(buf)), f"statfs {path}")
    return bytes(buf.f_fsid)


def available() -> str | None:
    """None when a FID-mode group can be created here, else why not."""
    try:
        FanotifyFid().close()
    except OSError as exc:
        return str(exc)
    return None


# -- permission events (the cell defender's exec gate) ------------------------------------------
FAN_CLASS_CONTENT = 0x4
FAN_REPORT_TID = 0x100  # the event's pid is the thread doing the access, not its process
FAN_OPEN_EXEC_PERM = 0x40000
FAN_ALLOW = 0x1
FAN_DENY = 0x2
FAN_AUDIT = 0x10  # ask the kernel to write an audit record too (needs FAN_ENABLE_AUDIT)
_RESPONSE = struct.Struct("=iI")


@dataclass(frozen=True)
class PermEvent:
    """An exec the kernel holds until it is answered: `fd` is the file about to run (caller closes it
    through `FanotifyPerm.answer`), `pid` the process doing the exec. `paired` is set when the native
    responder already checked an interpreter's pairing (and so consumed its record)."""

    mask: int
    fd: int
    pid: int
    paired: bool | None = None


class FanotifyPerm:
    """A content-class fanotify group answering FAN_OPEN_EXEC_PERM for whole filesystems or single
    mounts: the kernel blocks the execve until the answer, so the decision cannot be raced. With
    `report_tid` an event's pid is the thread in execve (one execve per thread at a time), which lets
    the caller pair a program's exec with the opening of its ELF interpreter."""

    def __init__(self, *, report_tid: bool = False) -> None:
        flags = FAN_CLOEXEC | FAN_CLASS_CONTENT | FAN_UNLIMITED_QUEUE | (FAN_REPORT_TID if report_tid else 0)
        self.fd = _check(libc.fanotify_init(flags, os.O_RDONLY | os.O_LARGEFILE), "fanotify_init(FAN_CLASS_CONTENT)")

    @classmethod
    def adopt(cls, fd: int) -> FanotifyPerm:
        """A group an earlier process created and passed on (its marks still in place)."""
        group = cls.__new__(cls)
        group.fd = fd
        return group

    def refuse_orphans(self, max_fd: int) -> int:
        """Refuse (FAN_DENY) every event an earlier reader of this group took and never answered (it
        died while the exec was held): the kernel matches a response by the event's fd number only,
        so every number the reader could have had is answered; the kernel says ENOENT for the rest.
        Call before reading any event of our own. Returns how many were held."""
        held = 0
        for fd in range(max_fd):
            try:
                os.write(self.fd, _RESPONSE.pack(fd, FAN_DENY))
                held += 1
            except OSError:
                pass
        return held

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def mark_filesystem(self, path: str, *, remove: bool = False) -> None:
        """Hold every exec of a file on the filesystem mounted at `path` (e.g. a container's overlay root)."""
        flags = (FAN_MARK_REMOVE if remove else FAN_MARK_ADD) | FAN_MARK_FILESYSTEM
        _check(libc.fanotify_mark(self.fd, flags, FAN_OPEN_EXEC_PERM, -100, os.fsencode(path)),
               f"fanotify_mark {path}")

    def mark_mount(self, path: str, *, remove: bool = False) -> None:
        """Hold every exec through the mount at `path` only (a bind mount of a file system shared with
        the host, a tmpfs): the same file reached through another mount is not held."""
        flags = (FAN_MARK_REMOVE if remove else FAN_MARK_ADD) | FAN_MARK_MOUNT
        _check(libc.fanotify_mark(self.fd, flags, FAN_OPEN_EXEC_PERM, -100, os.fsencode(path)),
               f"fanotify_mark (mount) {path}")

    def read(self, bufsize: int = 16384) -> list[PermEvent]:
        try:
            data = os.read(self.fd, bufsize)
        except OSError as exc:
            if exc.errno in (errno.EINTR, errno.EAGAIN):
                return []
            raise
        out = []
        off = 0
        while off + _META.size <= len(data):
            event_len, _vers, _res, _meta_len, mask, fd, pid = _META.unpack_from(data, off)
            if event_len < _META.size:
                break
            out.append(PermEvent(mask=mask, fd=fd, pid=pid))
            off += event_len
        return out

    def answer(self, event: PermEvent, allow: bool) -> None:
        """Release the held exec (allowed, or failed with EPERM) and close the event's fd."""
        try:
            os.write(self.fd, _RESPONSE.pack(event.fd, FAN_ALLOW if allow else FAN_DENY))
        finally:
            os.close(event.fd)


# -- the native responder (garrison/kernel/_fanperm.c) ------------------------------------------
try:
    from garrison.kernel import _fanperm
except ImportError:  # optional extension: every event is answered in Python
    _fanperm = None  # type: ignore[assignment]

CACHE_ALLOW, CACHE_LOADER, CACHE_INTERP, CACHE_RECORD, CACHE_LEARN = 1, 2, 4, 8, 16
"""verdict-cache flags: allowed; an ELF interpreter (answered natively only when paired); a program
whose interpreter the kernel opens next (pair it); report each hit to Python (audit/forensics);
count each hit with its argv and parent for learning (`learned`)"""


class NativeResponder(Protocol):
    """garrison/kernel/_fanperm.c's Responder: answers `perm`'s events in a native thread from the
    verdict cache, hands the rest to Python (`take`), and keeps the interpreter-pairing table both use."""

    notify_fd: int

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def put(self, dev: int, ino: int, ctime_ns: int, mtime_ns: int, size: int, path: bytes, flags: int,
            cookie: int, generation: int, /) -> bool: ...
    def clear(self, dev: int | None = None, /) -> int: ...
    def generation(self) -> int: ...
    def take(self) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int, int]], int, int]: ...
    def stats(self) -> dict[str, int]: ...
    def learned(self) -> list[tuple[int, bytes, bytes, int]]: ...
    def program_exec(self, tid: int, /) -> None: ...
    def is_interpreter(self, tid: int, /) -> bool: ...
    def forget(self, tid: int, /) -> None: ...


def native_responder(perm: FanotifyPerm) -> tuple[NativeResponder | None, str]:
    """A native responder for `perm`'s events (not started), or None and why not."""
    if _fanperm is None:
        return None, "native responder not built (garrison/kernel/_fanperm.c)"
    try:
        return _fanperm.Responder(perm.fd), "native"
    except OSError as exc:
        return None, f"native responder unavailable: {exc}"
