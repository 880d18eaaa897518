"""Sockets in another network namespace: created on a helper thread that joins the namespace (setns
is per thread), so the socket belongs to that namespace while the caller never moves."""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from garrison.kernel._libc import libc

CLONE_NEWNET = 0x40000000
libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
T = TypeVar("T")


def run_in_netns(ns_path: str, fn: Callable[[], T]) -> T:
    """`fn()` run on a thread inside the network namespace at `ns_path` (e.g. /proc/<pid>/ns/net);
    what it creates (sockets) stays in that namespace. The thread ends, and its namespace with it."""
    result: list[object] = []

    def worker() -> None:
        try:
            fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {ns_path}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(fn())
        except OSError as exc:
            result.append(exc)

    t = threading.Thread(target=worker, name="netns-helper")
    t.start()
    t.join()
    if isinstance(result[0], OSError):
        raise result[0]
    return result[0]  # type: ignore[return-value]


def socket_in_netns(ns_path: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    return run_in_netns(ns_path, lambda: socket.socket(family, kind | socket.SOCK_CLOEXEC, proto))
