"""Members of archives inside the scanned tree (jar, war, ear, zip, wheel ..., tarballs and .gem
files, and archives nested in them), for the secrets and malware checks:
`outer.jar!/inner.zip!/config/app.properties`, `vendor/cache/x.gem!/data.tar.gz!/lib/x.rb`.

Everything is read in memory from the outer file's bytes, never written. Bounds per top-level
archive: nesting depth, members, bytes inflated, each member's declared size, its compression ratio
(an overlapping-entry zip bomb declares gigabytes from a few kilobytes; a tarball's real output is
measured per 16 MiB window, as the droplet's own is), and the scan's deadline.
Members above a bound are skipped with a notice; the rest of the archive is still scanned.
"""

from __future__ import annotations

import io
import lzma
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from garrison.scan.source import Limits, ScanRefused, _decompressor, _HashingReader, _Meter

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
_TAR_NAMES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".gem", ".crate")


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


def _kind(path: str, head: bytes) -> str | None:
    if head.startswith(_ZIP_MAGIC):
        return "zip"  # by content: jar/war/ear/wheel/apk are zips, whatever they are called
    if head[257:262] == b"ustar":
        return "tar"
    if head.startswith(_COMPRESSED) and path.lower().endswith(_TAR_NAMES):
        return "tar"  # a compressed stream is a tarball only when named so (.gz logs are not)
    return None


def is_archive(path: str, head: bytes) -> bool:
    """`head`: the file's first 512 bytes."""
    return _kind(path, head) is not None


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
    yield from _open(path, data, note, lim, budget, 1)


def _open(
    path: str, data: bytes, note: Callable[[str, str], None], lim: NestedLimits, budget: _Budget, depth: int
) -> Iterator[tuple[str, bytes]]:
    kind = _kind(path, data[:512])
    if kind == "zip":
        yield from _zip(path, data, note, lim, budget, depth)
    elif kind == "tar":
        yield from _tar(path, data, note, lim, budget, depth)


def _nested(
    inner: str, body: bytes, note: Callable[[str, str], None], lim: NestedLimits, budget: _Budget, depth: int
) -> Iterator[tuple[str, bytes]]:
    if _kind(inner, body[:512]) is None:
        return
    if depth >= lim.max_depth:
        note(inner, f"archive nested deeper than {lim.max_depth} levels, not opened")
        return
    yield from _open(inner, body, note, lim, budget, depth + 1)


def _tar(
    path: str, data: bytes, note: Callable[[str, str], None], lim: NestedLimits, budget: _Budget, depth: int
) -> Iterator[tuple[str, bytes]]:
    raw = io.BytesIO(data)
    reader = _HashingReader(raw)
    bounds = Limits(
        max_total_bytes=max(budget.total, 0), max_ratio=lim.max_ratio, ratio_window=16 << 20, max_seconds=900
    )
    try:
        meter = _Meter(_decompressor(reader, raw), reader, bounds, Path(path), budget.deadline)
        with tarfile.open(fileobj=cast(Any, meter), mode="r|") as tf:
            while (m := tf.next()) is not None:
                cast(Any, tf).members.clear()
                if not m.isreg():
                    continue
                name = m.name[2:] if m.name.startswith("./") else m.name.lstrip("/")
                inner = f"{path}!/{name}"
                budget.members -= 1
                if budget.members < 0:
                    note(path, f"more than {lim.max_members} archive members, the rest not scanned")
                    return
                if m.size > lim.max_member_bytes:
                    note(
                        inner,
                        f"skipped: {m.size} bytes is above the {lim.max_member_bytes}-byte archive member limit",
                    )
                    continue
                f = tf.extractfile(m)
                if f is None:
                    continue
                body = f.read()
                budget.total -= len(body)
                yield inner, body
                yield from _nested(inner, body, note, lim, budget, depth)
    except ScanRefused as exc:
        note(path, f"archive not scanned further: {str(exc).split(': ', 1)[-1]}")
    except (tarfile.TarError, zlib.error, EOFError, OSError, lzma.LZMAError) as exc:
        note(path, f"not a readable archive, members not scanned further ({exc.__class__.__name__}: {exc})")


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
            yield from _nested(inner, body, note, lim, budget, depth)
