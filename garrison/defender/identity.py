"""Executable identity for the deny list. Deny patterns match paths and names; a renamed copy of a
denied program (`cp /usr/bin/dash /tmp/x/worker`) matches neither. So when a policy is loaded the
defender resolves the files each deny pattern names on this host — an absolute path (and what its
symlinks lead to), a glob, a bare name looked up in the system's bin directories, an `@family` of
well-known programs — and keeps their content digests (sha256). At exec, a file whose size is one of
theirs is hashed (once per inode and change: the cache keys on ctime) and a match is denied as the
program itself. A same-size file the defender may not read cannot be cleared: it counts as a copy.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from garrison.policy.families import family_of
from garrison.policy.model import ArgvPattern, ProcessPattern

log = logging.getLogger(__name__)

SYSTEM_BIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
MAX_FILES_PER_PATTERN = 64  # a pattern naming more (`/usr/bin/*`) stays path-based only
MAX_FILE_BYTES = 128 << 20
CACHE_SIZE = 4096
_GLOB_CHARS = set("*?[")


def files_named(pattern: ProcessPattern) -> list[str] | None:
    """The real paths of the regular files a deny pattern names on this host (None: too many)."""
    path = pattern.path if isinstance(pattern, ArgvPattern) else pattern
    family = family_of(path)
    cands: list[str] = []
    if family is not None or "/" not in path:
        for d in SYSTEM_BIN_DIRS:
            try:
                names = os.listdir(d)
            except OSError:
                continue
            cands += [
                os.path.join(d, n)
                for n in names
                if (n in family if family is not None else fnmatchcase(n, path))
            ]
    elif _GLOB_CHARS & set(path):
        cands = glob.glob(path)
    else:
        cands = [path]
    out: list[str] = []
    for c in cands:
        real = os.path.realpath(c)
        try:
            st = os.stat(real)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_FILE_BYTES and real not in out:
            out.append(real)
            if len(out) > MAX_FILES_PER_PATTERN:
                return None
    return out


def digest_file(path_or_fd: str | int) -> str:
    with open(path_or_fd, "rb", closefd=not isinstance(path_or_fd, int)) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass
class DeniedIdentities:
    """Digests of the files the deny list names: digest → {deny pattern index: file}."""

    by_digest: dict[str, dict[int, str]] = field(default_factory=dict)
    by_size: dict[int, dict[int, str]] = field(default_factory=dict)
    path_only: list[str] = field(default_factory=list)  # patterns naming too many files

    @classmethod
    def build(cls, deny: list[ProcessPattern]) -> DeniedIdentities:
        ids = cls()
        for i, p in enumerate(deny):
            files = files_named(p)
            if files is None:
                ids.path_only.append(p.path if isinstance(p, ArgvPattern) else p)
                continue
            for f in files:
                try:
                    d = digest_file(f)
                    size = os.stat(f).st_size
                except OSError as exc:
                    log.warning("cannot read %s named by the deny list: %s", f, exc)
                    continue
                ids.by_digest.setdefault(d, {}).setdefault(i, f)
                ids.by_size.setdefault(size, {}).setdefault(i, f)
        return ids

    @property
    def empty(self) -> bool:
        return not self.by_digest


class IdentityMatcher:
    """Answers "is this exec target a copy of a denied file?" for the current deny list, cheaply: a
    set lookup on the size first; a hash only for same-size files, cached per (inode, size, mtime,
    ctime) so a rewrite is hashed again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deny: object = None
        self._ids = DeniedIdentities()
        self._cache: OrderedDict[tuple[int, int], tuple[tuple[int, int, int], str | None]] = OrderedDict()

    def load(self, deny: list[ProcessPattern]) -> DeniedIdentities:
        """(Re)build for a deny list; a list equal to the loaded one is not hashed again."""
        with self._lock:
            if self._deny is deny or self._deny == deny:
                self._deny = deny
                return self._ids
        ids = DeniedIdentities.build(deny)
        with self._lock:
            self._deny, self._ids = deny, ids
        return ids

    def match(self, deny: list[ProcessPattern], fd: int, st: os.stat_result) -> dict[int, str]:
        """Deny pattern index → denied file, for the file behind `fd` (an O_PATH fd is fine)."""
        ids = self._ids if self._deny is deny else self.load(deny)
        same = ids.by_size.get(st.st_size)
        if not same:
            return {}
        digest = self._digest(fd, st)
        if digest is None:  # we may not read it: a same-size copy cannot be ruled out
            return {i: f"{f} (same size; unreadable, so not verifiable)" for i, f in same.items()}
        return ids.by_digest.get(digest, {})

    def _digest(self, fd: int, st: os.stat_result) -> str | None:
        key, state = (st.st_dev, st.st_ino), (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == state:
                self._cache.move_to_end(key)
                return hit[1]
        try:
            rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            digest: str | None = digest_file(rfd)
        except OSError:
            digest = None
        finally:
            os.close(rfd)
        with self._lock:
            self._cache[key] = (state, digest)
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return digest
