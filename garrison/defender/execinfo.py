"""What an execve/execveat is about to run: the resolved file, argv, and the `ld.so FILE` rewrite."""

from __future__ import annotations

import errno
import os
import re
import stat
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from garrison.kernel import fs as kfs
from garrison.kernel.procmem import MemReader

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
MAX_ARGS = 256
MAX_ARG_BYTES = 4096

_LOADER_RE = re.compile(
    r"^(ld-linux[\w.-]*\.so(\.\d+)*|ld\.so(\.\d+)*|ld-musl-[\w.-]+\.so(\.\d+)*|ld-[\d.]+\.so)$"
)
_LOADER_OPTS_WITH_ARG = {
    "--library-path",
    "--inhibit-rpath",
    "--audit",
    "--preload",
    "--argv0",
    "--glibc-hwcaps-prepend",
    "--glibc-hwcaps-mask",
}


@dataclass
class ExecTarget:
    raw_path: str
    exe: str  # resolved real path (or '/memfd:NAME (deleted)')
    argv: list[str]
    cwd: str
    exists: bool
    st: os.stat_result | None = None
    memfd: bool = False
    via_loader: str | None = None  # the loader path when this is `ld.so FILE`
    named: str = ""  # absolute path as the app named it, before symlinks were resolved
    error: int = 0  # errno the kernel would answer when the target cannot be run/identified
    via_script: str | None = None  # set on an interpreter: the `#!` script that names it
    fd_head: bytes = field(default=b"", repr=False)  # first bytes of the file (for `#!`)
    copy_of: dict[int, str] = field(default_factory=dict)  # deny index → denied file with this content


IdentityCheck = Callable[[int, os.stat_result], dict[int, str]]
"""(O_PATH fd, stat) → {deny pattern index: denied file} when the file has a denied file's content."""


def _signed(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def read_argv(mem: MemReader, argv_ptr: int) -> list[str]:
    out: list[str] = []
    if not argv_ptr:
        return out
    raw = mem.read_chunked(argv_ptr, 8 * MAX_ARGS)
    for i in range(0, len(raw) - 7, 8):
        ptr = int.from_bytes(raw[i : i + 8], "little")
        if not ptr:
            break
        out.append(mem.read_cstring(ptr, MAX_ARG_BYTES).decode(errors="surrogateescape"))
    return out


MAX_LINKS = 40  # the kernel's own limit on symlinks followed in one lookup (ELOOP beyond)
MAX_SHEBANG_DEPTH = 4  # BINPRM_MAX_RECURSION: a script's interpreter may itself be a script
_O_PATH = os.O_PATH | os.O_CLOEXEC


class Unidentified(OSError):
    """The exec's target could not be identified as the app sees it (errno says why)."""


@dataclass
class Resolved:
    """What an exec will open, seen as the target process sees it: an O_PATH fd on the very file (the
    caller closes it), its stat, and its path in the supervisor's view of the file system."""

    fd: int
    st: os.stat_result
    path: str

    @property
    def memfd(self) -> bool:
        return self.path.startswith("/memfd:")


_ours: tuple[int, int, int] | None = None


def _our_root() -> tuple[int, int, int]:
    global _ours
    if _ours is None:
        st = os.stat("/")
        _ours = (st.st_dev, st.st_ino, os.stat("/proc/self/ns/mnt").st_ino)
    return _ours


def _task(pid: int, tid: int) -> str:
    """The thread's own /proc directory: a thread that unshared CLONE_FS / CLONE_FILES has a cwd,
    root and fd table of its own, and the exec runs in that thread."""
    return f"/proc/{pid}/task/{tid}" if tid != pid else f"/proc/{pid}"


def _same_root(pid: int, tid: int | None = None) -> bool:
    """Does `pid` see the same root directory in the same mount namespace as the supervisor? Then an
    absolute symlink met on a relative lookup resolves the same for both of us."""
    try:
        st = os.stat(f"{_task(pid, tid or pid)}/root")
        ns = os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return False
    return (st.st_dev, st.st_ino, ns) == _our_root()


def _is_proc_root(fd: int) -> bool:
    return os.fstat(fd).st_ino == 1 and kfs.fs_type(fd) == kfs.PROC_SUPER_MAGIC


def _walk(pid: int, tid: int, root: int, start: int, path: str) -> int:
    """Resolve `path` one component at a time from `start` (a directory fd), as the kernel would for
    the target: absolute names and absolute symlinks restart at the target's `root`, `..` stops there,
    procfs `self`/`thread-self` name the target (not us), and procfs magic links (/proc/<pid>/fd/N,
    cwd, root, exe, map_files) are followed by the kernel to the very object they pin, whatever their
    text says (a deleted file, a memfd, another mount namespace). Returns an O_PATH fd."""
    comps = deque(path.split("/"))
    cur = os.dup(root if path.startswith("/") else start)
    links = 0
    try:
        while comps:
            c = comps.popleft()
            if c in ("", "."):
                continue
            if c == "..":
                cst, rst = os.fstat(cur), os.fstat(root)
                if (cst.st_dev, cst.st_ino) != (rst.st_dev, rst.st_ino):
                    nxt = os.open("..", _O_PATH, dir_fd=cur)
                    os.close(cur)
                    cur = nxt
                continue
            if c in ("self", "thread-self") and _is_proc_root(cur):
                sub = [str(pid)] if c == "self" else [str(pid), "task", str(tid)]
                comps.extendleft(reversed(sub))
                continue
            nxt = os.open(c, _O_PATH | os.O_NOFOLLOW, dir_fd=cur)
            st = os.fstat(nxt)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_LINKS:
                    os.close(nxt)
                    raise OSError(errno.ELOOP, "too many levels of symbolic links")
                if kfs.fs_type(cur) == kfs.PROC_SUPER_MAGIC and not _is_proc_root(cur):
                    os.close(nxt)  # a magic link: let the kernel follow it to what it pins
                    nxt = os.open(c, _O_PATH, dir_fd=cur)
                    st = os.fstat(nxt)
                else:
                    target = os.readlink(c, dir_fd=cur)
                    os.close(nxt)
                    comps.extendleft(reversed(target.split("/")))
                    if target.startswith("/"):
                        os.close(cur)
                        cur = os.dup(root)
                    continue
            if comps and any(x not in ("", ".") for x in comps) and not stat.S_ISDIR(st.st_mode):
                os.close(nxt)
                raise OSError(errno.ENOTDIR, "not a directory")
            os.close(cur)
            cur = nxt
        return cur
    except BaseException:
        os.close(cur)
        raise


def resolve_in_target(pid: int, tid: int, dirfd: int, raw: str, flags: int = 0) -> Resolved:
    """Open what execve/execveat(dirfd, raw, flags) in thread `tid` of `pid` will open, resolved in
    the target's context (its root, cwd, fds, /proc/self = the target). Raises OSError with the errno
    the kernel would give (ENOENT, ENOTDIR, ELOOP, EACCES...) when there is nothing to run.

    Fast path: one openat2 that refuses magic links (RESOLVE_NO_MAGICLINKS) — leaving procfs for a
    real file is only possible through one, so a result that is not on procfs cannot have been
    misled by our own /proc/self. Anything else (an error, a magic link, procfs) takes the walk."""
    proc = _task(pid, tid)
    if raw == "":
        if not flags & AT_EMPTY_PATH:
            raise OSError(errno.ENOENT, "empty path")
        return _resolved(_open_base(proc, dirfd))
    root = os.open(f"{proc}/root", _O_PATH)
    try:
        rel = not raw.startswith("/")
        start = _open_base(proc, dirfd) if rel else -1
        try:
            fd = -1
            try:
                if not rel:
                    fd = kfs.openat2(root, raw, os.O_PATH, kfs.RESOLVE_IN_ROOT | kfs.RESOLVE_NO_MAGICLINKS)
                elif _same_root(pid, tid):
                    fd = kfs.openat2(start, raw, os.O_PATH, kfs.RESOLVE_NO_MAGICLINKS)
                if fd >= 0 and kfs.fs_type(fd) == kfs.PROC_SUPER_MAGIC:
                    os.close(fd)
                    fd = -1
            except OSError:
                fd = -1
            if fd < 0:
                fd = _walk(pid, tid, root, start, raw)
            return _resolved(fd)
        finally:
            if start >= 0:
                os.close(start)
    finally:
        os.close(root)


def _open_base(proc: str, dirfd: int) -> int:
    """The target's cwd or its fd `dirfd` (EBADF, as the kernel says, when it has no such fd)."""
    if dirfd == AT_FDCWD:
        return os.open(f"{proc}/cwd", _O_PATH)
    try:
        return os.open(f"{proc}/fd/{dirfd}", _O_PATH)
    except FileNotFoundError:
        raise OSError(errno.EBADF, f"no fd {dirfd}") from None


def _resolved(fd: int) -> Resolved:
    try:
        return Resolved(fd, os.fstat(fd), os.readlink(f"/proc/self/fd/{fd}"))
    except BaseException:
        os.close(fd)
        raise


def read_head(fd: int, size: int = 256) -> bytes:
    """The first bytes of the file behind an O_PATH fd (b"" if we may not read it)."""
    try:
        rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return b""
    try:
        return os.pread(rfd, size, 0)
    except OSError:
        return b""
    finally:
        os.close(rfd)


def shebang(head: bytes) -> str | None:
    """The interpreter a `#!` script names (as the kernel parses it: first word after #!)."""
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip(b" \t")
    word = line.split(None, 1)[0] if line else b""
    return word.decode(errors="surrogateescape") or None


def is_loader(path: str) -> bool:
    return _LOADER_RE.match(os.path.basename(path)) is not None


def loader_target(argv: list[str]) -> int | None:
    """Index in argv of the program `ld.so [options] PROGRAM args` will load, if any."""
    i = 1
    while i < len(argv):
        a = argv[i]
        if a in _LOADER_OPTS_WITH_ARG:
            i += 2
            continue
        if a.startswith("--"):
            if a == "--":
                return i + 1 if i + 1 < len(argv) else None
            i += 1
            continue
        return i
    return None


def inspect(
    mem: MemReader,
    pid: int,
    nr_is_execveat: bool,
    args: tuple[int, ...],
    tid: int | None = None,
    *,
    head: bool = True,
    identity: IdentityCheck | None = None,
) -> ExecTarget:
    """Read what the trapped execve/execveat asks for and identify the file it will run, as the
    target sees it. `exists` False with `error` set: the kernel would fail the exec with that errno
    (nothing runs); `error` set with `exists` True never happens."""
    if nr_is_execveat:
        dirfd, path_ptr, argv_ptr, flags = _signed(args[0]), args[1], args[2], args[4]
    else:
        dirfd, path_ptr, argv_ptr, flags = AT_FDCWD, args[0], args[1], 0
    raw = mem.read_cstring(path_ptr).decode(errors="surrogateescape")
    if not raw and mem.read(path_ptr, 1) != b"\0":
        raise OSError(errno.EFAULT, "exec path pointer unreadable")  # as the kernel will answer
    argv = read_argv(mem, argv_ptr)
    return identify(pid, tid or pid, dirfd, raw, flags, argv, head=head, identity=identity)


def _cwd(pid: int, tid: int | None = None) -> str:
    try:
        return os.readlink(f"{_task(pid, tid or pid)}/cwd")
    except OSError:
        return ""


def identify(
    pid: int,
    tid: int,
    dirfd: int,
    raw: str,
    flags: int,
    argv: list[str],
    *,
    head: bool = True,
    identity: IdentityCheck | None = None,
) -> ExecTarget:
    """ExecTarget for an exec of `raw` by `pid`, resolved in its context; `ld.so FILE` is followed to
    what will really run, with `head` the file's first bytes are kept (for `#!`), and `identity`
    says whether the very file opened is a copy of a denied one."""
    cwd = _cwd(pid, tid)
    named = os.path.normpath(os.path.join(cwd, raw)) if raw and dirfd == AT_FDCWD else ""
    t = ExecTarget(raw_path=raw, exe=raw, argv=argv, cwd=cwd, exists=False, named=named)
    try:
        r = resolve_in_target(pid, tid, dirfd, raw, flags)
    except OSError as exc:
        t.error = exc.errno or errno.EACCES
        return t
    try:
        t.exe, t.st, t.memfd = r.path, r.st, r.memfd
        t.exists = stat.S_ISREG(r.st.st_mode)
        if not t.exists:
            t.error = errno.EACCES  # a directory, a device...: the kernel refuses it
            return t
        t.fd_head = read_head(r.fd) if head and not r.memfd else b""
        if identity is not None:
            t.copy_of = identity(r.fd, r.st)
    finally:
        os.close(r.fd)
    if not t.memfd and is_loader(t.exe):
        idx = loader_target(argv)
        if idx is not None:
            inner = identify(pid, tid, AT_FDCWD, argv[idx], 0, argv[idx:], head=head, identity=identity)
            inner.via_loader = t.exe
            inner.named = os.path.normpath(os.path.join(cwd, argv[idx]))
            return inner
    return t


def interpreter_of(
    pid: int, tid: int, t: ExecTarget, depth: int = 0, identity: IdentityCheck | None = None
) -> ExecTarget | None:
    """The interpreter a `#!` script makes the kernel run (itself resolved in the target's context),
    or None. A chain of scripts is followed as deep as the kernel goes."""
    interp = shebang(t.fd_head)
    if interp is None or depth >= MAX_SHEBANG_DEPTH:
        return None
    it = identify(pid, tid, AT_FDCWD, interp, 0, [interp, t.exe, *t.argv[1:]], identity=identity)
    it.via_script = t.exe
    if it.exists and shebang(it.fd_head) is not None:
        deeper = interpreter_of(pid, tid, it, depth + 1, identity)
        if deeper is not None:
            return deeper
    return it
