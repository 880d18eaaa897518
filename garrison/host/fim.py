"""File integrity monitoring: a baseline of the paths the policy names, a rescan that catches what
changed while nobody watched, and live change events (fanotify FID mode, with the pid that made the
change; inotify where fanotify is missing, without it).

A change is judged against the baseline, not the previous event, so an attacker who changes a file
and restores its mtime is still seen (ctime and the content hash cannot be set from user space)."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import pwd
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from garrison.host.model import HostEvent

DEFAULT_PATHS = (
    "/etc", "/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/lib",
    "/var/vcap/jobs", "/var/vcap/packages", "/boot",
)
DEFAULT_EXCLUDES = ("/etc/mtab", "/etc/adjtime", "*.swp", "*~", "/etc/ld.so.cache")
HASH_LIMIT = 256 * 1024 * 1024  # files above this are compared by metadata only (said in the change)
_CHUNK = 1 << 20
# fields an app cannot forge after the fact; mtime is reported but never trusted alone
COMPARED = ("kind", "sha256", "mode", "uid", "gid", "size", "ctime_ns", "link")


@dataclass(frozen=True)
class FileState:
    kind: str  # file | dir | link | other
    mode: int
    uid: int
    gid: int
    size: int
    ctime_ns: int
    mtime_ns: int
    ino: int
    sha256: str | None = None
    link: str | None = None


def file_state(path: str, *, hash_limit: int = HASH_LIMIT) -> FileState | None:
    """The state of one path (None when it does not exist). Never follows a final symlink."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    digest = link = None
    if stat.S_ISREG(st.st_mode):
        kind = "file"
        if st.st_size <= hash_limit:
            digest = _sha256(path)
    elif stat.S_ISDIR(st.st_mode):
        kind = "dir"
    elif stat.S_ISLNK(st.st_mode):
        kind = "link"
        link = os.readlink(path)
    else:
        kind = "other"
    return FileState(
        kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, size=st.st_size,
        ctime_ns=st.st_ctime_ns, mtime_ns=st.st_mtime_ns, ino=st.st_ino, sha256=digest, link=link,
    )


def _sha256(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return h.hexdigest()


class Watchlist:
    """Which paths are monitored: roots and exclusion globs (a glob with '/' matches the path)."""

    def __init__(self, roots: Iterable[str] = DEFAULT_PATHS, excludes: Iterable[str] = DEFAULT_EXCLUDES):
        self.roots = tuple(os.path.normpath(os.path.abspath(r)) for r in roots)
        self.excludes = tuple(excludes)

    def covers(self, path: str) -> bool:
        if not any(path == r or path.startswith(r.rstrip("/") + "/") for r in self.roots):
            return False
        name = os.path.basename(path)
        return not any(fnmatch.fnmatch(path if "/" in g else name, g) for g in self.excludes)

    def walk(self) -> Iterator[str]:
        """Every covered path under the roots, staying on each root's filesystem."""
        for root in self.roots:
            if not os.path.lexists(root):
                continue
            yield root
            dev = os.lstat(root).st_dev
            for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
                keep = []
                for d in dirnames:
                    full = os.path.join(dirpath, d)
                    try:
                        same_fs = os.lstat(full).st_dev == dev
                    except OSError:
                        continue
                    if same_fs and self.covers(full):
                        keep.append(d)
                        yield full
                dirnames[:] = keep
                for f in filenames:
                    full = os.path.join(dirpath, f)
                    if self.covers(full):
                        yield full


class Baseline:
    """The accepted state of every monitored path, in SQLite (survives a defender restart)."""

    def __init__(self, db: Path) -> None:
        db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        os.chmod(db, 0o600)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, kind TEXT, mode INT, uid INT, gid INT,"
            " size INT, ctime_ns INT, mtime_ns INT, ino INT, sha256 TEXT, link TEXT)"
        )
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")

    def close(self) -> None:
        self.db.close()

    def get(self, path: str) -> FileState | None:
        row = self.db.execute(
            "SELECT kind, mode, uid, gid, size, ctime_ns, mtime_ns, ino, sha256, link FROM files"
            " WHERE path = ?", (path,)
        ).fetchone()
        return FileState(*row) if row else None

    def put(self, path: str, state: FileState | None) -> None:
        if state is None:
            self.db.execute("DELETE FROM files WHERE path = ?", (path,))
            return
        self.db.execute(
            "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (path, state.kind, state.mode, state.uid, state.gid, state.size, state.ctime_ns,
             state.mtime_ns, state.ino, state.sha256, state.link),
        )

    def paths(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT path FROM files")}

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM files").fetchone()[0])

    def build(self, watch: Watchlist, progress: Callable[[int], None] | None = None) -> int:
        """Replace the baseline with the current state of everything the watchlist covers."""
        n = 0
        self.db.execute("BEGIN")
        self.db.execute("DELETE FROM files")
        for path in watch.walk():
            state = file_state(path)
            if state is not None:
                self.put(path, state)
                n += 1
                if progress and n % 1000 == 0:
                    progress(n)
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('built', ?)", (str(time.time()),))
        self.db.execute("COMMIT")
        return n


def compare(path: str, old: FileState | None, new: FileState | None) -> tuple[str, list[str]] | None:
    """(action, changed fields) when `new` differs from the baseline `old`, else None."""
    if old is None and new is None:
        return None
    if old is None:
        return "created", []
    if new is None:
        return "deleted", []
    changed = [f for f in COMPARED if getattr(old, f) != getattr(new, f)]
    if new.kind == "dir":
        changed = [f for f in changed if f not in ("size", "ctime_ns")]  # entries come and go
    if not changed:
        return None
    if old.ino != new.ino and "sha256" in changed:
        return "replaced", changed
    return "modified", changed


def _severity(path: str, action: str, fields: list[str]) -> str:
    if "sha256" in fields or action in ("created", "replaced", "deleted"):
        if any(path.startswith(p) for p in ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/boot")):
            return "high"
        return "medium"
    return "low"


def change_event(
    host: str, path: str, action: str, fields: list[str], old: FileState | None, new: FileState | None,
    pid: int | None = None, who: dict[str, str] | None = None,
) -> HostEvent:
    if who is None:
        who = who_is(pid) if pid else {}
    detail = f" ({', '.join(fields)})" if fields else ""
    by = f" by {who.get('process', '?')} (pid {pid}, user {who.get('user', '?')})" if pid else ""
    return HostEvent(
        host=host, type="fim", action=action, severity=_severity(path, action, fields),  # type: ignore[arg-type]
        path=path, pid=pid, process=who.get("process"), user=who.get("user"),
        message=f"{path} {action}{detail}{by}",
        extra={"fields": fields, "old": asdict(old) if old else None, "new": asdict(new) if new else None},
    )


def who_is(pid: int) -> dict[str, str]:
    """Process and user of a pid, as far as /proc still tells (it may be gone already)."""
    out: dict[str, str] = {}
    try:
        out["process"] = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        with contextlib.suppress(OSError):
            out["process"] = Path(f"/proc/{pid}/comm").read_text().strip()
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
                try:
                    out["user"] = pwd.getpwuid(uid).pw_name
                except KeyError:
                    out["user"] = str(uid)
                break
    except OSError:
        pass
    return out


def rescan(baseline: Baseline, watch: Watchlist, host: str) -> list[HostEvent]:
    """Every difference between the baseline and the file system now (after downtime, or on demand)."""
    events = []
    known = baseline.paths()
    for path in watch.walk():
        known.discard(path)
        old, new = baseline.get(path), file_state(path)
        diff = compare(path, old, new)
        if diff:
            events.append(change_event(host, path, diff[0], diff[1], old, new))
    for path in sorted(known):
        if watch.covers(path) and not os.path.lexists(path):
            events.append(change_event(host, path, "deleted", [], baseline.get(path), None))
    return events


def accept(baseline: Baseline, events: Iterable[HostEvent]) -> None:
    """Take the reported changes into the baseline (the operator approved them)."""
    for ev in events:
        if ev.path:
            baseline.put(ev.path, file_state(ev.path))
