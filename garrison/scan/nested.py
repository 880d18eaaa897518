"""Members of archives inside the scanned tree (jar, war, ear, zip, wheel ... and archives nested in
them), for the secrets and malware checks: `outer.jar!/inner.zip!/config/app.properties`.

Everything is read in memory from the outer file's bytes, never written. Bounds per top-level
archive: nesting depth, members, bytes inflated, each member's declared size, its compression ratio
(an overlapping-entry zip bomb declares gigabytes from a few kilobytes), and the scan's deadline.
Members above a bound are skipped with a notice; the rest of the archive is still scanned.
"""

from __future__ import annotations

import io
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass
class NestedLimits:
    max_depth: int = 4  # outer.jar!/a.war!/b.jar!/c.zip!/file
    max_members: int = 100_000  # per top-level archive, all levels
    max_total_bytes: int = 1 << 30  # inflated per top-level archive
    max_member_bytes: int = 64 << 20
    max_ratio: int = 200  # declared size / compressed size, for members above 1 MiB


@dataclass
class _Budget:
    members: int
    total: int
    deadline: float


def is_archive(head: bytes) -> bool:
    """Zip family by content (jar/war/ear/wheel/apk are zips), whatever the file is called."""
    return head.startswith(_ZIP_MAGIC)


def iter_nested(
    path: str,
    data: bytes,
    note: Callable[[str, str], None],
    limits: NestedLimits | None = None,
    deadline: float | None = None,
) -> Iterator[tuple[str, bytes]]:
    """(path inside, content) for every file member at every level, archives included (so a nested
    archive is itself checked by hash and YARA before its members are)."""
    lim = limits or NestedLimits()
    budget = _Budget(lim.max_members, lim.max_total_bytes, deadline or time.monotonic() + 900)
    yield from _zip(path, data, note, lim, budget, 1)


def _zip(
    path: str, data: bytes, note: Callable[[str, str], None], lim: NestedLimits, budget: _Budget, depth: int
) -> Iterator[tuple[str, bytes]]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        note(path, f"not a readable archive, members not scanned ({exc})")
        return
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            inner = f"{path}!/{info.filename.lstrip('/')}"
            budget.members -= 1
            if budget.members < 0:
                note(path, f"more than {lim.max_members} archive members, the rest not scanned")
                return
            if time.monotonic() > budget.deadline:
                note(path, "scan deadline reached inside this archive, the rest not scanned")
                return
            size = info.file_size
            if size > lim.max_member_bytes:
                note(
                    inner,
                    f"skipped: {size} bytes is above the {lim.max_member_bytes}-byte archive member limit",
                )
                continue
            if size > 1 << 20 and size > lim.max_ratio * max(info.compress_size, 1):
                note(inner, f"skipped: compression ratio above {lim.max_ratio}:1 (zip bomb?)")
                continue
            if size > budget.total:
                note(inner, f"skipped: archive expands past {lim.max_total_bytes} bytes (zip bomb?)")
                budget.total = -1
                continue
            try:
                body = zf.read(info)
            except (
                zipfile.BadZipFile,
                zlib.error,
                OSError,
                EOFError,
                RuntimeError,
                ValueError,
                NotImplementedError,
            ) as exc:
                note(inner, f"unreadable archive member: {exc.__class__.__name__}: {exc}")
                continue
            budget.total -= len(body)
            yield inner, body
            if body[:4] in _ZIP_MAGIC:
                if depth >= lim.max_depth:
                    note(inner, f"archive nested deeper than {lim.max_depth} levels, not opened")
                else:
                    yield from _zip(inner, body, note, lim, budget, depth + 1)
