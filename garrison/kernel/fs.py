"""File-system lookups done the kernel's way: openat2 with RESOLVE_* restrictions, the type of the
file system behind an fd (fstatfs). No policy in here."""

from __future__ import annotations

import ctypes
import errno
import os

from garrison.kernel._libc import libc, syscall

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

PROC_SUPER_MAGIC = 0x9FA0


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2_ok: bool | None = None  # learnt on first use (5.6+; a container profile may refuse it)


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """openat2(2); raises OSError. ENOSYS/EPERM from a kernel or profile without it is remembered and
    raised again at once (callers fall back to a walk of their own)."""
    global _openat2_ok
    if _openat2_ok is False:
        raise OSError(errno.ENOSYS, "openat2 unavailable")
    how = OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    try:
        fd = syscall("openat2", dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM) and _openat2_ok is None:
            _openat2_ok = False
        raise
    _openat2_ok = True
    return fd


class _StatFs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_long * 15)]


libc.fstatfs.argtypes = [ctypes.c_int, ctypes.POINTER(_StatFs)]
libc.fstatfs.restype = ctypes.c_int


def fs_type(fd: int) -> int:
    """The magic number of the file system `fd` lives on (PROC_SUPER_MAGIC for procfs)."""
    buf = _StatFs()
    if libc.fstatfs(fd, ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(buf.f_type) & 0xFFFFFFFF
