"""Give freed heap back to the system: glibc keeps it otherwise, and the console's RSS only grows.

Ingest allocates and frees megabytes per second (JSON frames, event models, row tuples) from the
event loop and from the store's worker threads; glibc gives each thread its own arena and keeps
freed chunks in them, so after a burst RSS stays at its peak for ever although Python freed
everything. Three settings bound that: at most ARENA_MAX arenas (fewer half-empty heaps); a fixed
mmap threshold (MMAP_THRESHOLD: glibc otherwise raises it after the first large free, and then
every connection's 256 KiB TLS read buffer comes from heap pages freed event data already dirtied,
resident at once, instead of fresh pages touched only as deep as reads go, and returned at close);
and `malloc_trim(0)` every TRIM_EVERY_S while anything was ingested since the last trim (it
returns the free pages of every arena; a few ms). Not glibc (musl, macOS): all are skipped.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
from collections.abc import Callable

log = logging.getLogger("garrison.console.memory")

ARENA_MAX = 2
MMAP_THRESHOLD = 128 * 1024
TRIM_EVERY_S = 10.0
GC_YOUNG_THRESHOLD = 50_000
"""allocations between young-generation collections (CPython's default is 700)"""
_M_ARENA_MAX = -8  # glibc malloc.h
_M_MMAP_THRESHOLD = -3


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 - glibc only
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def tune_malloc(arenas: int = ARENA_MAX, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Call before worker threads start (threads that already have an arena keep it). An operator's
    own MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ setting wins."""
    if _LIBC is None:
        return False
    ok = True
    if not os.environ.get("MALLOC_ARENA_MAX"):
        ok = bool(_LIBC.mallopt(_M_ARENA_MAX, arenas)) and ok
    if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        ok = bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and ok
    return ok


def tune_gc(young_threshold: int = GC_YOUNG_THRESHOLD) -> None:
    """Fewer collections during ingest. With CPython's default a 200-event batch (models, dicts,
    argv lists: ~1,000 tracked objects) starts a collection or two while the batch is still alive,
    so its objects get promoted and later swept again in older generations, and older collections
    walk every connection's objects: 10-15% of the console's CPU at 1,000 defenders. Objects that
    exist once the console is set up (app, schemas, caches) are frozen out of collections for good.
    Reference counting still frees everything acyclic at once; this only delays cycle detection."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)


def trim() -> bool:
    """Return free heap pages to the system; True if glibc released any."""
    return bool(_LIBC.malloc_trim(0)) if _LIBC is not None else False


def rss_bytes() -> int:
    """Resident set size of this process (for /metrics and the scale benchmark)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - /proc is always there on Linux
        return 0


async def trim_while_busy(activity: Callable[[], object], every_s: float = TRIM_EVERY_S) -> None:
    """Run for ever: trim every `every_s` if `activity()` (e.g. events ingested) moved since the
    last trim — an idle console has nothing new to give back."""
    if _LIBC is None:
        return
    seen = activity()
    while True:
        await asyncio.sleep(every_s)
        now = activity()
        if now != seen:
            seen = now
            await asyncio.to_thread(trim)
