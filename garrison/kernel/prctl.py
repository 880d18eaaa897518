"""prctl and rlimit helpers (no policy)."""

from __future__ import annotations

import ctypes
import resource

from garrison.kernel._libc import check, libc

PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36

libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.prctl.restype = ctypes.c_int


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return check(libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def set_no_new_privs() -> None:
    """Required before an unprivileged thread may install a seccomp filter or Landlock domain."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_child_subreaper() -> None:
    """Orphans of the app tree are re-parented to us, so we can reap them."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_pdeathsig(sig: int) -> None:
    """Deliver `sig` to this process when the *thread* that forked it exits."""
    prctl(PR_SET_PDEATHSIG, sig)


def set_nproc_limit(limit: int) -> None:
    """Hard-cap RLIMIT_NPROC (counts every process of the real uid; root ignores it)."""
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


SIGCHLD = 17
_gil_libc = ctypes.PyDLL(None)  # calls through PyDLL keep the GIL held
_gil_libc.syscall.restype = ctypes.c_long
_pyapi = ctypes.pythonapi


def fork_with_tag(tag: int) -> int:
    """fork() as a raw clone(SIGCHLD) whose otherwise-unused tls argument carries `tag`.

    Why: the supervisor's spawning thread runs under the app's seccomp filter, and CPython holds the
    GIL across fork; a trapped fork would wait for a listener thread that needs that GIL. The filter
    lets a clone carrying the secret tag through. Mirrors os.fork()'s interpreter bookkeeping.
    """
    _pyapi.PyOS_BeforeFork()
    pid = int(
        _gil_libc.syscall(ctypes.c_long(56), ctypes.c_ulong(SIGCHLD), None, None, None, ctypes.c_ulong(tag))
    )
    if pid == 0:
        _pyapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    _pyapi.PyOS_AfterFork_Parent()
    if pid < 0:
        import os

        raise OSError(err, f"clone: {os.strerror(err)}")
    return pid
