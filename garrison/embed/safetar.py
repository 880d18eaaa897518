"""Reading droplets that may be hostile: every member is checked before anything is written.

A droplet comes from a build we do not control. Each member is checked against a *virtual* file
tree built from the members seen so far, so symlink chains (`a -> d/l/..` where `d/l -> ..`) are
resolved the way the kernel would resolve them after extraction, not just lexically. Size and
member-count limits stop decompression bombs while streaming, before the whole archive is read.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

GiB = 1024**3


class UnsafeArchive(Exception):
    """The archive is malformed or tries to escape its root; the message names the member."""


@dataclass(frozen=True)
class Limits:
    """Bounds for a droplet; CF's own default droplet limit is well under these."""

    max_total_bytes: int = 4 * GiB
    max_members: int = 200_000
    max_member_bytes: int = 2 * GiB


@dataclass
class _Tree:
    """What the archive would create so far: symlinks (path -> target) and regular files."""

    links: dict[str, str] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)

    def resolve(self, path: str, *, follow_last: bool = True) -> str | None:
        """Root-relative normal path, following symlinks; None if it leaves the root."""
        parts = [p for p in path.split("/") if p not in ("", ".")]
        out: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if not out:
                    return None
                out.pop()
                continue
            candidate = "/".join([*out, part])
            target = self.links.get(candidate)
            if target is not None and (parts or follow_last):
                hops += 1
                if hops > 40 or target.startswith("/"):
                    return None
                # targets are stored root-relative: restart the walk from the root
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                out = []
                continue
            out.append(part)
        return "/".join(out)


def normalise_name(name: str) -> str:
    """Member name without a leading './'; raises for absolute or escaping names."""
    if name.startswith("/"):
        raise UnsafeArchive(f"absolute path in archive: {name!r}")
    norm = posixpath.normpath(name)
    if norm == ".":
        return ""
    if norm == ".." or norm.startswith("../"):
        raise UnsafeArchive(f"path escapes the archive root: {name!r}")
    if "\x00" in name:
        raise UnsafeArchive(f"NUL byte in member name: {name!r}")
    return norm


class Checker:
    """Validates members in archive order; keeps the virtual tree and running totals."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.tree = _Tree()
        self.total = 0
        self.count = 0

    def check(self, m: tarfile.TarInfo) -> str:
        """Return the normalised name of an acceptable member, or raise UnsafeArchive."""
        self.count += 1
        if self.count > self.limits.max_members:
            raise UnsafeArchive(f"more than {self.limits.max_members} members (archive bomb?)")
        name = normalise_name(m.name)
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise UnsafeArchive(f"device, FIFO or special file refused: {m.name!r}")
        if m.size > self.limits.max_member_bytes:
            raise UnsafeArchive(f"member too large ({m.size} bytes): {m.name!r}")
        self.total += max(m.size, 0)
        if self.total > self.limits.max_total_bytes:
            raise UnsafeArchive(
                f"archive expands past {self.limits.max_total_bytes} bytes (archive bomb?) at {m.name!r}"
            )
        if not name:
            return name
        parent = posixpath.dirname(name)
        real_parent = self.tree.resolve(parent) if parent else ""
        if real_parent is None:
            raise UnsafeArchive(f"member is written through a symlink leading outside: {m.name!r}")
        real = posixpath.join(real_parent, posixpath.basename(name)) if real_parent else name
        if m.issym():
            target = m.linkname
            if target.startswith("/"):
                raise UnsafeArchive(f"absolute symlink refused: {m.name!r} -> {target!r}")
            joined = posixpath.join(real_parent, target) if real_parent else target
            if self.tree.resolve(joined) is None:
                raise UnsafeArchive(f"symlink points outside the archive: {m.name!r} -> {target!r}")
            self.tree.links[real] = joined
        elif m.islnk():
            hard = self.tree.resolve(normalise_name(m.linkname))
            if hard is None or hard not in self.tree.files:
                raise UnsafeArchive(f"hard link to a file outside the archive: {m.name!r} -> {m.linkname!r}")
            self.tree.files.add(real)
        else:
            self.tree.links.pop(real, None)
            if m.isreg():
                self.tree.files.add(real)
        return name


def iter_checked(
    tf: tarfile.TarFile, limits: Limits | None = None
) -> Iterator[tuple[tarfile.TarInfo, str, IO[bytes] | None]]:
    """Yield (member, normalised name, data stream for regular files) after checking each member."""
    checker = Checker(limits)
    try:
        for m in tf:
            name = checker.check(m)
            yield m, name, (tf.extractfile(m) if m.isreg() else None)
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise UnsafeArchive(f"corrupt archive: {e}") from e


def open_archive(path: Path) -> tarfile.TarFile:
    """Open a (possibly compressed) tar for streaming; corrupt input becomes UnsafeArchive."""
    try:
        return tarfile.open(path, mode="r:*")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UnsafeArchive(f"{path}: not a readable tar archive: {e}") from e


def safe_extract(path: Path, dest: Path, limits: Limits | None = None) -> None:
    """Extract into dest after our own checks, with the stdlib 'data' filter as a second guard."""
    dest.mkdir(parents=True, exist_ok=True)
    with open_archive(path) as tf:
        for m, _name, _data in iter_checked(tf, limits):
            try:
                tf.extract(m, dest, filter="data")
            except tarfile.FilterError as e:
                raise UnsafeArchive(f"refused by the tar data filter: {e}") from e
            except (tarfile.TarError, EOFError, OSError) as e:
                raise UnsafeArchive(f"corrupt archive or unwritable destination at {m.name!r}: {e}") from e
