"""Landlock (5.13+): an exec allow-set for the calling thread and its future children."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable

from garrison.kernel._libc import SYSCALLS, check, libc

LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
ACCESS_FS_EXECUTE = 1 << 0


class RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """Landlock ABI version, 0 when the kernel lacks it or a seccomp profile blocks it."""
    ret = int(
        libc.syscall(
            ctypes.c_long(SYSCALLS["landlock_create_ruleset"]), None, 0, LANDLOCK_CREATE_RULESET_VERSION
        )
    )
    return max(ret, 0)


def restrict_exec(dirs: Iterable[str], files: Iterable[str]) -> tuple[int, list[str]]:
    """Allow exec only beneath `dirs` and of the exact inodes `files`; applies to the calling thread.

    Returns (rules added, paths skipped because they vanished). Replacing a file later gives it a new
    inode that no rule covers, so the kernel refuses to exec it: this is drift prevention.
    """
    attr = RulesetAttr(ACCESS_FS_EXECUTE)
    rs = check(
        int(
            libc.syscall(
                ctypes.c_long(SYSCALLS["landlock_create_ruleset"]), ctypes.byref(attr), ctypes.sizeof(attr), 0
            )
        ),
        "landlock_create_ruleset",
    )
    added = 0
    skipped: list[str] = []
    try:
        for path in [*dirs, *files]:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                skipped.append(path)
                continue
            try:
                pb = PathBeneathAttr(ACCESS_FS_EXECUTE, fd)
                ret = int(
                    libc.syscall(
                        ctypes.c_long(SYSCALLS["landlock_add_rule"]),
                        rs,
                        LANDLOCK_RULE_PATH_BENEATH,
                        ctypes.byref(pb),
                        0,
                    )
                )
                check(ret, f"landlock_add_rule({path})")
                added += 1
            finally:
                os.close(fd)
        check(
            int(libc.syscall(ctypes.c_long(SYSCALLS["landlock_restrict_self"]), rs, 0)),
            "landlock_restrict_self",
        )
    finally:
        os.close(rs)
    return added, skipped


ACCESS_NET_BIND_TCP = 1 << 0
ACCESS_NET_CONNECT_TCP = 1 << 1
LANDLOCK_RULE_NET_PORT = 2


class NetRulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64)]


class NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def restrict_tcp_connect(ports: Iterable[int]) -> int:
    """Allow TCP connect only to `ports` (ABI 4+, 6.7); applies to the calling thread and its future
    children, in the kernel: those connects need no seccomp notification. Returns the rules added."""
    attr = NetRulesetAttr(0, ACCESS_NET_CONNECT_TCP)
    rs = check(
        int(
            libc.syscall(
                ctypes.c_long(SYSCALLS["landlock_create_ruleset"]), ctypes.byref(attr), ctypes.sizeof(attr), 0
            )
        ),
        "landlock_create_ruleset(net)",
    )
    added = 0
    try:
        for port in sorted(set(ports)):
            rule = NetPortAttr(ACCESS_NET_CONNECT_TCP, port)
            ret = int(
                libc.syscall(
                    ctypes.c_long(SYSCALLS["landlock_add_rule"]),
                    rs,
                    LANDLOCK_RULE_NET_PORT,
                    ctypes.byref(rule),
                    0,
                )
            )
            check(ret, f"landlock_add_rule(tcp port {port})")
            added += 1
        check(
            int(libc.syscall(ctypes.c_long(SYSCALLS["landlock_restrict_self"]), rs, 0)),
            "landlock_restrict_self(net)",
        )
    finally:
        os.close(rs)
    return added
