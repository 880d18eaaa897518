"""memfd_create with MFD_NOEXEC_SEAL (6.3+): a memfd that can never become executable."""

from __future__ import annotations

import ctypes

from garrison.kernel._libc import syscall

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
