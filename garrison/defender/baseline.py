"""The drift baseline: the executables present when the app started.

System roots (root-owned stack directories the app user cannot write) are trusted as whole trees;
the app's own directories are recorded file by file (inode, size, mtime, ctime) so a file written,
replaced or modified later is not in the baseline. ctime is the fact that matters: the file's owner
can put size and mtime back (`utime`, same-size rewrite), but every write, truncate, chmod, rename or
new link sets ctime to the current time and no call lets an unprivileged user set it back. The same
facts drive Landlock's exec allow-set (which keys on the inode and cannot see a rewrite in place).
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from dataclasses import dataclass, field

DEFAULT_SYSTEM_ROOTS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
MAX_FILES = 200_000


def _interpreter_root() -> str | None:
    """The Python install the defender itself runs from (CF stacks ship theirs under /usr)."""
    root = os.path.realpath(sys.base_prefix)
    return root if root not in ("/", "") else None


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def file_state(st: os.stat_result) -> tuple[int, int, int]:
    """What must be unchanged for a baseline file to still be the file seen at start."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class Baseline:
    system_roots: list[str] = field(default_factory=list)
    files: dict[tuple[int, int], tuple[int, int, int]] = field(
        default_factory=dict
    )  # (dev, ino) → file_state()
    paths: list[str] = field(default_factory=list)
    truncated: bool = False

    @classmethod
    def capture(cls, app_dirs: list[str], extra_roots: list[str] | None = None) -> Baseline:
        roots: list[str] = []
        for r in [*DEFAULT_SYSTEM_ROOTS, *(extra_roots or []), _interpreter_root()]:
            if r and os.path.isdir(r):
                real = os.path.realpath(r)
                if real not in roots:
                    roots.append(real)
        b = cls(system_roots=roots)
        for d in app_dirs:
            b._walk(os.path.realpath(d))
        return b

    def _walk(self, top: str) -> None:
        if any(_under(top, r) for r in self.system_roots):
            return
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
            for name in filenames:
                p = os.path.join(dirpath, name)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
                    if len(self.files) >= MAX_FILES:
                        self.truncated = True
                        return
                    self.files[(st.st_dev, st.st_ino)] = file_state(st)
                    self.paths.append(p)

    def contains(self, path: str, st: os.stat_result | None = None) -> bool:
        """Is the real path `path` (already resolved) an executable present at start, unchanged?
        Under a system root the file must also be the one *we* find at that path: in a mount
        namespace of its own (root) the app can bind another file over /usr/bin/x."""
        if any(_under(path, r) for r in self.system_roots):
            if st is None:
                return True
            try:
                ours = os.stat(path)
            except OSError:
                return False
            return (ours.st_dev, ours.st_ino) == (st.st_dev, st.st_ino)
        if st is None:
            try:
                st = os.stat(path)
            except OSError:
                return False
        return self.files.get((st.st_dev, st.st_ino)) == file_state(st)


class LazyBaseline:
    """Captured in the background when drift prevention is off at start (it may be switched on by a
    policy push later); `get()` waits for it. Start-up stays fast for large app directories."""

    def __init__(self, app_dirs: list[str], *, background: bool) -> None:
        self._dirs = app_dirs
        self._value: Baseline | None = None
        self._done = threading.Event()
        if background:
            threading.Thread(target=self._capture, name="garrison-baseline", daemon=True).start()
        else:
            self._capture()

    def _capture(self) -> None:
        try:
            self._value = Baseline.capture(self._dirs)
        finally:
            self._done.set()

    def get(self) -> Baseline:
        self._done.wait()
        return self._value if self._value is not None else Baseline()
