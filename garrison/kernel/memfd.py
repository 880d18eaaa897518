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

