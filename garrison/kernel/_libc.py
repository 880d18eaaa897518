"""libc access and x86_64 syscall numbers: the only place that knows them."""

from __future__ import annotations

import ctypes
import os


def _load_libc() -> ctypes.CDLL:
    """glibc by its soname; `find_library` (which runs `ldconfig -p`, a fork + exec added to every
    defender start) only where that name does not load (musl)."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c"), use_errno=True)


libc = _load_libc()


def release_free_heap() -> None:
    """Give the heap Python freed back to the system (glibc `malloc_trim`; nothing elsewhere). A
    process that built its validators and compiled its code at start keeps those pages resident
    otherwise, for as long as it runs."""
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
libc.syscall.restype = ctypes.c_long

# x86_64 syscall table (arch/x86/entry/syscalls/syscall_64.tbl), the ones Garrison traps or calls.
SYSCALLS: dict[str, int] = {
    "read": 0,
    "write": 1,
    "open": 2,
    "close": 3,
    "socket": 41,
    "connect": 42,
    "accept": 43,
    "sendto": 44,
    "recvfrom": 45,
    "sendmsg": 46,
    "recvmsg": 47,
    "bind": 49,
    "listen": 50,
    "setsockopt": 54,
    "clone": 56,
    "fork": 57,
    "vfork": 58,
    "execve": 59,
    "kill": 62,
    "getpid": 39,
    "getuid": 102,
    "getppid": 110,
    "ptrace": 101,
    "prctl": 157,
    "accept4": 288,
    "sendmmsg": 307,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "seccomp": 317,
    "memfd_create": 319,
    "execveat": 322,
    "pidfd_send_signal": 424,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "clone3": 435,
    "pidfd_open": 434,
    "pidfd_getfd": 438,
    "openat2": 437,
    "landlock_create_ruleset": 444,
    "landlock_add_rule": 445,
    "landlock_restrict_self": 446,
    "unshare": 272,
    "bpf": 321,
    "perf_event_open": 298,
    "fanotify_init": 300,
}
NR_TO_NAME: dict[int, str] = {v: k for k, v in SYSCALLS.items()}


def syscall(name: str, *args: object) -> int:
    """Call a raw syscall by name; raise OSError(errno) on failure like os.* functions do.

    Plain ints are widened to C longs: syscall(2) reads every argument as a long, and an int passed
    untyped fills only half of a stack slot (the 7th argument of a 6-argument syscall is on the
    stack), so process_vm_readv sometimes saw garbage flags and failed with EINVAL."""
    wide = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ret = int(libc.syscall(ctypes.c_long(SYSCALLS[name]), *wide))
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return ret


def check(ret: int, what: str) -> int:
    """Turn a libc -1 return into OSError with errno."""
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret
