"""Walk a droplet (tar, optionally compressed), a directory or a host root, refusing hostile input.

Archives are *streamed*, never extracted: nothing is written to disk, so traversal, absolute names,
links pointing out and device nodes cannot plant files anywhere; they are skipped with a notice.
Decompression bombs are bounded by what the scan actually does, measured on the bytes really read:
entries, bytes produced by the decompressor (skipped members included), each member's declared size,
the compression ratio over every window of output (a bomb that interleaves random data with zeros
still has windows of pure zeros), and wall-clock time. Memory is bounded by `max_file_bytes` (the
most one member's content held at once); tarfile's member list is not kept.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import posixpath
import stat
import tarfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from garrison.scan.model import ScanNotice

_CHUNK = 1 << 20
HOST_EXCLUDES = (
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "var/tmp",
    "var/cache",
    "var/lib/docker",
    "snap",
    "mnt",
    "media",
)


class ScanRefused(Exception):
    """The target cannot be scanned safely (corrupt archive, limits exceeded); exit code 2."""


@dataclass
class Limits:
    """Bounds for one scan. A Cloud Foundry droplet is unpacked into the app's disk quota (1 GiB by
    default), so real droplets sit far below these; each is a CLI option for the exceptions."""

    max_files: int = 200_000  # entries of any type (the app-embed extractor uses the same bound)
    max_total_bytes: int = 8 << 30  # bytes produced by decompression (or read from a directory)
    max_member_bytes: int = 4 << 30  # one archive member's declared size
    max_file_bytes: int = 256 << 20  # larger files are hashed, not held in memory or analysed
    max_ratio: int = 200  # output/input of the decompressor, over every `ratio_window` of output
    ratio_window: int = 256 << 20
    max_seconds: float = 900.0  # Cloud Foundry's default staging timeout is 15 minutes


@dataclass
class Entry:
    path: str  # relative, '/'-separated, no leading './'
    size: int
    data: bytes | None  # None when larger than max_file_bytes
    sha256: str | None = None  # set for oversized files when hashing was asked for


@dataclass
class Walk:
    """Result holder filled while iterating: the target digest and the notices."""

    digest: str = ""
    notices: list[ScanNotice] = field(default_factory=list)
    files: int = 0
    bytes: int = 0

    def note(self, path: str, message: str) -> None:
        self.notices.append(ScanNotice(path=path, message=message))


class _HashingReader:
    """File wrapper that hashes what tarfile reads, so the droplet digest costs no second pass."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.h = hashlib.sha256()
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        b = self.raw.read(n)
        self.h.update(b)
        self.pos += len(b)
        return b

    def drain(self) -> str:
        while self.read(_CHUNK):
            pass
        return "sha256:" + self.h.hexdigest()


class _Meter:
    """What tarfile reads from: counts the bytes the decompressor really produces and checks the
    total, the ratio per window of output and the deadline on every read, so a bomb is refused
    within one window of starting, whatever the members declare."""

    def __init__(
        self, stream: Any, reader: _HashingReader, limits: Limits, name: Path, deadline: float
    ) -> None:
        self.stream, self.reader, self.limits, self.name = stream, reader, limits, name
        self.deadline = deadline
        self.out = 0
        self.window_out = 0
        self.window_in = reader.pos

    def read(self, n: int = -1) -> bytes:
        b = self.stream.read(n)
        self.out += len(b)
        self.window_out += len(b)
        lim = self.limits
        if self.out > lim.max_total_bytes:
            raise ScanRefused(
                f"{self.name}: expands past {lim.max_total_bytes} bytes (decompression bomb?), refused; "
                "raise --max-bytes if this droplet is genuine"
            )
        if self.window_out >= lim.ratio_window:
            consumed = max(self.reader.pos - self.window_in, 1)
            if self.window_out > lim.max_ratio * consumed:
                raise ScanRefused(
                    f"{self.name}: {self.window_out} bytes decompressed from {consumed} "
                    f"(ratio above {lim.max_ratio}:1 after {self.out - self.window_out} bytes; "
                    "decompression bomb?), refused"
                )
            self.window_out, self.window_in = 0, self.reader.pos
        if time.monotonic() > self.deadline:
            raise ScanRefused(f"{self.name}: scan took longer than {lim.max_seconds:.0f} s, refused")
        return b


def _decompressor(reader: _HashingReader, raw: BinaryIO) -> Any:
    """Pick the decompressor by magic bytes. gzip/bz2/lzma file objects check end-of-stream markers
    and CRCs, so a truncated droplet is reported as corrupt instead of silently scanned in part."""
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=cast(Any, reader), mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(cast(Any, reader), mode="rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(cast(Any, reader), mode="rb")
    return reader


def _safe_name(name: str) -> str | None:
    """Normalised relative member name, or None for absolute names and '..' traversal."""
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def _link_escapes(member: str, target: str, hard: bool) -> bool:
    if target.startswith("/"):
        return True
    base = "" if hard else posixpath.dirname(member)
    norm = posixpath.normpath(posixpath.join(base, target))
    return norm == ".." or norm.startswith("../")


def _read_limited(
    f: IO[bytes], size: int, limits: Limits, want_hash: bool
) -> tuple[bytes | None, str | None]:
    if size <= limits.max_file_bytes:
        return f.read(), None
    h = hashlib.sha256() if want_hash else None
    while chunk := f.read(_CHUNK):
        if h:
            h.update(chunk)
    return None, (h.hexdigest() if h else None)


def iter_tar(
    path: Path,
    walk: Walk,
    limits: Limits,
    *,
    hash_big: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[Entry]:
    total_in = path.stat().st_size
    deadline = time.monotonic() + limits.max_seconds
    with path.open("rb") as raw:
        reader = _HashingReader(raw)
        try:
            stream = _decompressor(reader, raw)
            meter = _Meter(stream, reader, limits, path, deadline)
            tf = tarfile.open(fileobj=cast(Any, meter), mode="r|")  # noqa: SIM115
        except (tarfile.TarError, zlib.error, EOFError, OSError, lzma.LZMAError) as exc:
            raise ScanRefused(f"{path}: corrupt or not a tar archive ({exc})") from exc
        try:
            while (m := tf.next()) is not None:
                cast(Any, tf).members.clear()  # stream mode keeps every TarInfo otherwise: memory per entry
                if walk.files >= limits.max_files:
                    raise ScanRefused(
                        f"{path}: more than {limits.max_files} entries (tar bomb?), refused at entry "
                        f"{walk.files + 1}; raise --max-files if this droplet is genuine"
                    )
                walk.files += 1
                name = _safe_name(m.name)
                if name is None:
                    walk.note(m.name, "refused: absolute or '..' path in archive (path traversal), skipped")
                    continue
                if m.issym() or m.islnk():
                    if _link_escapes(name, m.linkname, m.islnk()):
                        kind = "hardlink" if m.islnk() else "symlink"
                        walk.note(
                            name, f"refused: {kind} points outside the archive ({m.linkname}), not followed"
                        )
                    continue
                if m.ischr() or m.isblk() or m.isfifo():
                    walk.note(name, "skipped: device or FIFO entry in archive")
                    continue
                if not m.isreg():
                    continue
                if m.size > limits.max_member_bytes:
                    raise ScanRefused(
                        f"{path}: member {name} declares {m.size} bytes, above the {limits.max_member_bytes}-"
                        "byte member limit (decompression bomb?), refused"
                    )
                walk.bytes += m.size
                f = tf.extractfile(m)
                if f is None:
                    continue
                data, digest = _read_limited(f, m.size, limits, hash_big)
                if data is None:
                    walk.note(
                        name, f"skipped: {m.size} bytes is above the {limits.max_file_bytes}-byte file limit"
                    )
                if progress:
                    progress(reader.pos, total_in)
                yield Entry(name, m.size, data, digest)
            # tarfile treats a truncated header as the end: read the compressed stream to its end
            # marker so truncation raises, then finish the file digest
            while stream is not reader and meter.read(_CHUNK):
                pass
            walk.digest = reader.drain()
        except (tarfile.TarError, zlib.error, EOFError, OSError, lzma.LZMAError) as exc:
            raise ScanRefused(f"{path}: corrupt archive ({exc.__class__.__name__}: {exc})") from exc
        finally:
            tf.close()


def iter_dir(
    root: Path,
    walk: Walk,
    limits: Limits,
    *,
    host: bool = False,
    hash_big: bool = False,
    progress: Callable[[int, int], None] | None = None,
    want: Callable[[str, bytes], bool] | None = None,
) -> Iterator[Entry]:
    """Walk `root` without following symlinks; the digest is a tree digest of paths and contents
    (paths, sizes and mtimes for a host, where `want(path, head)` limits what is read at all)."""
    root = root.resolve()
    deadline = time.monotonic() + limits.max_seconds
    excludes = {root / e for e in HOST_EXCLUDES} if host else set()
    tree = hashlib.sha256()
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                items = sorted(it, key=lambda e: e.name, reverse=True)
        except OSError as exc:
            walk.note(str(d.relative_to(root)), f"skipped: cannot list directory ({exc.strerror})")
            continue
        dirs: list[Path] = []
        for de in reversed(items):
            p = Path(de.path)
            rel = p.relative_to(root).as_posix()
            try:
                st = de.stat(follow_symlinks=False)
            except OSError as exc:
                walk.note(rel, f"skipped: {exc.strerror}")
                continue
            if stat.S_ISDIR(st.st_mode):
                if p not in excludes:
                    dirs.append(p)
                continue
            if stat.S_ISLNK(st.st_mode):
                if not host:
                    target = os.readlink(p)
                    if _link_escapes(rel, target, False):
                        walk.note(
                            rel, f"refused: symlink points outside the scanned tree ({target}), not followed"
                        )
                continue
            if not stat.S_ISREG(st.st_mode):
                if not host:
                    walk.note(rel, "skipped: device, FIFO or socket")
                continue
            # a host root is not hostile input: its size is what it is
            if not host and walk.files >= limits.max_files:
                raise ScanRefused(f"{root}: more than {limits.max_files} files, refused")
            if not host and time.monotonic() > deadline:
                raise ScanRefused(f"{root}: scan took longer than {limits.max_seconds:.0f} s, refused")
            walk.files += 1
            walk.bytes += st.st_size
            if not host and walk.bytes > limits.max_total_bytes:
                raise ScanRefused(f"{root}: more than {limits.max_total_bytes} bytes, refused")
            try:
                fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
                with os.fdopen(fd, "rb") as f:
                    if want is not None and not want(rel, f.read(8)):
                        tree.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                        continue  # host mode: only files some check asked for are read
                    f.seek(0)
                    data, digest = _read_limited(f, st.st_size, limits, hash_big)
            except OSError as exc:
                walk.note(rel, f"skipped: cannot read ({exc.strerror})")
                continue
            if data is None:
                walk.note(
                    rel, f"skipped: {st.st_size} bytes is above the {limits.max_file_bytes}-byte file limit"
                )
            if host:
                tree.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            else:
                content = (
                    hashlib.sha256(data).hexdigest() if data is not None else (digest or str(st.st_size))
                )
                tree.update(f"{rel}\0{content}\n".encode())
            if progress:
                progress(walk.files, 0)
            yield Entry(rel, st.st_size, data, digest)
        stack.extend(reversed(dirs))
    walk.digest = "sha256:" + tree.hexdigest()
