"""What an execve/execveat is about to run: the resolved file, argv, and the `ld.so FILE` rewrite."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

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


def _proc_path(pid: int, path: str) -> str:
    """/proc/self and /proc/thread-self must mean the app, not the supervisor."""
    for pfx in ("/proc/self/", "/proc/thread-self/"):
        if path.startswith(pfx):
            return f"/proc/{pid}/" + path[len(pfx) :]
    return path


def realpath(path: str) -> str:
    """The kernel's own resolution of `path` (open O_PATH, then its /proc/self/fd link): what exec
    will find, in three syscalls instead of an lstat per component. Names that do not resolve fall back
    to os.path.realpath (the exec itself will then fail with the kernel's error)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(path)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)
    finally:
        os.close(fd)


def resolve(pid: int, dirfd: int, raw: str, flags: int) -> tuple[str, str, bool]:
    """(resolved path, cwd, is_memfd) of what the kernel will open."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = ""
    if raw == "" and flags & AT_EMPTY_PATH:
        link = os.readlink(f"/proc/{pid}/fd/{dirfd}")
        return (link, cwd, link.startswith("/memfd:"))
    if raw.startswith("/"):
        joined = raw
    else:
        base = cwd if dirfd == AT_FDCWD else os.readlink(f"/proc/{pid}/fd/{dirfd}")
        joined = os.path.join(base, raw)
    joined = _proc_path(pid, joined)
    m = re.match(r"^/proc/(\d+)/(exe|fd/\d+)$", joined)
    if m:
        try:
            link = os.readlink(joined)
        except OSError:
            return (joined, cwd, False)
        if link.startswith("/memfd:"):
            return (link, cwd, True)
        joined = link
    return (realpath(joined), cwd, False)


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


def inspect(mem: MemReader, pid: int, nr_is_execveat: bool, args: tuple[int, ...]) -> ExecTarget:
    if nr_is_execveat:
        dirfd, path_ptr, argv_ptr, flags = _signed(args[0]), args[1], args[2], args[4]
    else:
        dirfd, path_ptr, argv_ptr, flags = AT_FDCWD, args[0], args[1], 0
    raw = mem.read_cstring(path_ptr).decode(errors="surrogateescape")
    argv = read_argv(mem, argv_ptr)
    exe, cwd, memfd = resolve(pid, dirfd, raw, flags)
    named = os.path.normpath(os.path.join(cwd, raw)) if raw and dirfd == AT_FDCWD else ""
    t = ExecTarget(raw_path=raw, exe=exe, argv=argv, cwd=cwd, exists=False, memfd=memfd, named=named)
    if memfd:
        t.exists = True
        return t
    try:
        t.st = os.stat(exe)
        t.exists = stat.S_ISREG(t.st.st_mode)
    except OSError:
        return t
    if t.exists and is_loader(exe):
        idx = loader_target(argv)
        if idx is not None:
            target = os.path.normpath(os.path.join(cwd, argv[idx]))
            real = realpath(_proc_path(pid, target))
            try:
                st = os.stat(real)
            except OSError:
                st = None
            t = ExecTarget(
                raw_path=argv[idx],
                exe=real,
                argv=argv[idx:],
                cwd=cwd,
                exists=st is not None,
                st=st,
                via_loader=exe,
                named=target,
            )
    return t
