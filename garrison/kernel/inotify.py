"""inotify, for file-integrity monitoring where fanotify FID mode is missing (no pid in its events)."""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator

from garrison.kernel._libc import libc

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_Q_OVERFLOW = 0x4000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
INTEGRITY_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE

_EVENT = struct.Struct("=iIII")  # wd, mask, cookie, len

libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


class Inotify:
    """Recursive directory watches; events come back as (mask, full path)."""

    def __init__(self) -> None:
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd = fd
        self._dirs: dict[int, str] = {}

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def watch_dir(self, path: str) -> None:
        wd = libc.inotify_add_watch(self.fd, os.fsencode(path), INTEGRITY_MASK)
        if wd >= 0:
            self._dirs[wd] = path

    def watch_tree(self, root: str) -> None:
        if not os.path.isdir(root):
            self.watch_dir(os.path.dirname(root) or "/")
            return
        self.watch_dir(root)
        for dirpath, dirnames, _files in os.walk(root, followlinks=False):
            for d in dirnames:
                self.watch_dir(os.path.join(dirpath, d))

    def read(self, bufsize: int = 65536) -> Iterator[tuple[int, str]]:
        try:
            data = os.read(self.fd, bufsize)
        except BlockingIOError:
            return
        off = 0
        while off + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, off)
            name = data[off + _EVENT.size : off + _EVENT.size + length].split(b"\0", 1)[0]
            off += _EVENT.size + length
            base = self._dirs.get(wd)
            if base is None:
                continue
            path = os.path.join(base, os.fsdecode(name)) if name else base
            yield mask, path
            if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                # a new directory: watch it, and report what was put in it before the watch existed
                self.watch_tree(path)
                for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
                    for entry in (*dirnames, *filenames):
                        yield IN_CREATE, os.path.join(dirpath, entry)
