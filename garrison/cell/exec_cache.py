"""The exec gate's verdict cache for the native responder (garrison/kernel/_fanperm.c): which Python
decisions may be answered again without Python, and what a native answer reports back.

A decision is cached only when it depends on nothing but the file and the container's rule:
- the file is on a container's overlay root (its device belongs to that one container; a file reached
  through another mount may be shared between containers and stays with Python);
- the app has started (before, there is no drift baseline) and the file was identified in a layer;
- not the dynamic loader run directly (that decision depends on the argv; the native side hands any
  unpaired interpreter back);
- its ctime is older than `SETTLE_S`: any later change moves ctime past the cached one even with a
  coarse file-system clock, so a file rewritten after the decision never matches.
The native side also checks mtime, size and the fd's path (hard links, renames) on each hit.
Rules change → the container's entries are dropped and the generation moves, so a decision taken
under the old rule and cached after the change is refused."""

from __future__ import annotations

import os
import struct
import threading
import time
from dataclasses import dataclass

from garrison.cell.exec_gate import ExecFacts
from garrison.kernel.fanotify import (
    CACHE_ALLOW,
    CACHE_INTERP,
    CACHE_LEARN,
    CACHE_LOADER,
    CACHE_RECORD,
    NativeResponder,
)
from garrison.policy.evaluate import Decision

SETTLE_S = 1.0
_ELF_IDENT = struct.Struct("=4sB")
_PT_INTERP = 3


def runs_interpreter(fd: int) -> bool:
    """Will the kernel open an ELF interpreter for this program (PT_INTERP)? True when in doubt, so
    its interpreter's event always finds the pairing record."""
    try:
        head = os.pread(fd, 64, 0)
        magic, cls = _ELF_IDENT.unpack_from(head)
        if magic != b"\x7fELF":
            return True  # a script: its interpreter is an exec of its own; pair conservatively
        if cls == 2:
            phoff, = struct.unpack_from("=Q", head, 32)
            phentsize, phnum = struct.unpack_from("=HH", head, 54)
        else:
            phoff, = struct.unpack_from("=I", head, 28)
            phentsize, phnum = struct.unpack_from("=HH", head, 42)
        if not 4 <= phentsize <= 64 or phnum > 512:
            return True
        table = os.pread(fd, phentsize * phnum, phoff)
        if len(table) < phentsize * phnum:
            return True
        return any(struct.unpack_from("=I", table, i * phentsize)[0] == _PT_INTERP for i in range(phnum))
    except (OSError, struct.error):
        return True


@dataclass(frozen=True)
class Cached:
    """What a native answer stands for: who, which file, which decision (for audits and forensics)."""

    owner: object  # the defender's per-container record
    facts: ExecFacts
    decision: Decision | None  # None: no rule, forensics only


class VerdictCache:
    """Python's side of the native verdict cache: puts with the right key and flags, and the cookie each
    native answer reports back."""

    def __init__(self, responder: NativeResponder) -> None:
        self.responder = responder
        self._lock = threading.Lock()
        self._cookies: dict[int, Cached] = {}
        self._cookie_of: dict[tuple[int, int], int] = {}
        # replaced cookies the native side may still have counts for (kept over two learned() calls: a
        # put races a drain)
        self._retired: dict[int, Cached] = {}
        self._retired_before: dict[int, Cached] = {}
        self._next = 1

    def generation(self) -> int:
        return self.responder.generation()

    def remember(self, st: os.stat_result, path: str, *, allow: bool, loader: bool, interp: bool,
                 record: bool, entry: Cached, generation: int, learn: bool = False) -> bool:
        """Cache one decision (`st`: the fd's stat taken before deciding); `learn`: the native side
        counts each hit with its argv and parent (learned())."""
        if st.st_ctime >= time.time() - SETTLE_S:
            return False
        flags = ((CACHE_ALLOW if allow else 0) | (CACHE_LOADER if loader else 0) | (CACHE_INTERP if interp else 0)
                 | (CACHE_RECORD if record else 0) | (CACHE_LEARN if learn and allow else 0))
        key = (st.st_dev, st.st_ino)
        with self._lock:
            cookie = self._next
            self._next += 1
            old = self._cookie_of.pop(key, None)
            if old is not None:
                gone = self._cookies.pop(old, None)
                if learn and gone is not None and len(self._retired) < 65536:
                    self._retired[old] = gone  # counted under the old cookie since the last learned()
            self._cookies[cookie] = entry
            self._cookie_of[key] = cookie
        return self.responder.put(
            st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_size, os.fsencode(path), flags, cookie,
            generation)

    def learned(self) -> list[tuple[Cached, list[str], str, int]]:
        """Execs the native side answered and counted while learning, since the last call: (what the
        cookie stands for, argv, parent executable, count)."""
        out = []
        rows = self.responder.learned()
        with self._lock:
            retired = {**self._retired_before, **self._retired}
            self._retired_before, self._retired = self._retired, {}
        for cookie, argv, parent, count in rows:
            entry = self.lookup(cookie) or retired.get(cookie)
            if entry is not None:
                args = [a.decode(errors="surrogateescape") for a in argv.split(b"\0")[:-1]]
                out.append((entry, args, parent.decode(errors="surrogateescape")[:4096], count))
        return out

    def lookup(self, cookie: int) -> Cached | None:
        with self._lock:
            return self._cookies.get(cookie)

    def forget(self, dev: int, *, gone: bool = False) -> None:
        """Drop one container's entries (its rule changed, or it is gone: `gone` drops the reports'
        bookkeeping too, since its overlay's device number will be reused)."""
        self.responder.clear(dev)
        if gone:
            with self._lock:
                for key in [k for k in self._cookie_of if k[0] == dev]:
                    self._cookies.pop(self._cookie_of.pop(key), None)
