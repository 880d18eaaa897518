"""Exec allow/deny and drift for every container, in the kernel's path: fanotify FAN_OPEN_EXEC_PERM
marked on each container's overlay root holds every execve until it is answered.

Which file is about to run comes from the event's fd, not from a path the app controls:
- the container is the one whose overlay has that fd's device;
- the path is the fd's path inside the container;
- **drift**: a file of the upper layer (written into the container, or a rootfs file modified and so
  copied up) is in the baseline only if it was there before the app process started (the droplet
  Garden streams in first); a file of a lower layer (the rootfs image) must have the inode the overlay
  reports for the fd. Anything else, or anything we cannot identify, is drift.
- the container's other mounts (a tmpfs /dev, bind mounts) are marked one by one: a file on a
  read-only mount is the platform's (baseline), on a writable one it is treated like the upper layer.

Code that runs without an execve of its file:
- **the dynamic loader run directly** (`ld.so /tmp/dropped`, which maps the file rather than execs
  it): the kernel opens an ELF interpreter with the same exec-open as the program, in the same
  execve of the same thread, so a loader opened with no program exec before it in that very call
  (same thread, same syscall registers) was named by the caller: the program it would load is
  not checked by the kernel, so it is treated as drift (its argv, read for the audit only, names it).
- **memfd**: executables from memfd_create live on an internal mount fanotify cannot mark. A dynamic
  one still shows its interpreter opened with no program exec before it (above); every one is
  stopped by `vm.memfd_noexec = 2` in the container's pid namespace (a memfd can never be made
  executable there), which the cell defender sets under drift prevention."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Protocol

from garrison.cell.containers import Container, Mount
from garrison.defender.execinfo import is_loader, loader_target, read_argv
from garrison.kernel.procmem import MemReader, syscall_state
from garrison.policy.evaluate import ALLOW, Decision, decide_exec
from garrison.policy.model import Rule

BASELINE_LAYERS = frozenset({"lower", "upper-baseline", "mount-ro", "mount-baseline"})
_EXECVEAT = 322  # x86_64; execve is 59


@dataclass(frozen=True)
class ExecFacts:
    path: str  # as the container sees it
    layer: str  # lower | upper-baseline | upper-new | mount-ro | mount-baseline | mount-new | memfd | unknown
    ino: int
    # the dynamic loader opened with no program exec before it: what the caller asked to run (the
    # program the loader's argv names, or the memfd / unmarked file it was asked to execute) and the
    # argv, read for the audit only
    loaded: str | None = None
    argv: list[str] | None = None

    @property
    def program(self) -> str:
        return self.loaded if self.loaded is not None else self.path


def _lower_has(layers: list[str], rel: str, ino: int) -> bool:
    for lower in layers:
        try:
            st = os.lstat(os.path.join(lower, rel))
        except OSError:
            continue
        return st.st_ino == ino  # the topmost lower layer holding the path is the one shown
    return False


def identify(container: Container, fd: int) -> ExecFacts:
    """Where the file behind `fd` comes from (fd-based: renaming the path meanwhile changes nothing)."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
        st = os.fstat(fd)
    except OSError:
        return ExecFacts("?", "unknown", 0)
    layers = container.layers
    if layers is None:
        return ExecFacts(path, "unknown", st.st_ino)
    rel = path.lstrip("/")
    # The upper layer first: overlayfs keeps a copied-up file's lower inode number, so a rootfs binary
    # modified in place would pass an inode check against the lower layer. The fd's path follows
    # renames, so moving the file while the exec is held does not move it out of the upper layer.
    if layers.upper:
        try:
            up = os.lstat(os.path.join(layers.upper, rel))
        except OSError:
            up = None
        if up is not None and stat.S_ISREG(up.st_mode):
            layer = "upper-new" if _new_since_start(container, up.st_ctime) else "upper-baseline"
            return ExecFacts(path, layer, st.st_ino)
    if _lower_has(layers.lower, rel, st.st_ino):
        return ExecFacts(path, "lower", st.st_ino)
    return ExecFacts(path, "unknown", st.st_ino)


def _new_since_start(container: Container, ctime: float) -> bool:
    started = container.app_started
    return started is None or ctime >= started


def identify_on_mount(container: Container, mount: Mount, fd: int) -> ExecFacts:
    """A file on one of the container's other mounts (fd-based, like `identify`)."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
        st = os.fstat(fd)
    except OSError:
        return ExecFacts("?", "unknown", 0)
    if mount.read_only:
        return ExecFacts(path, "mount-ro", st.st_ino)
    return ExecFacts(path, "mount-new" if _new_since_start(container, st.st_ctime) else "mount-baseline", st.st_ino)


class Pairing(Protocol):
    def program_exec(self, tid: int, /) -> None: ...
    def is_interpreter(self, tid: int, /) -> bool: ...


class InterpreterPairing:
    """Tells the kernel opening an ELF interpreter for a program it is executing from a process
    running the loader itself. The program's exec event and its interpreter's come from the same
    thread in the same execve, with identical syscall registers (no other thread can change them
    while it waits); an execve that failed after its file was opened (E2BIG...) and a new one made
    next do not match: their arguments differ or the thread left the call."""

    def __init__(self, limit: int = 8192) -> None:
        self._last: dict[int, str] = {}
        self._limit = limit

    def program_exec(self, tid: int) -> None:
        state = syscall_state(tid)
        if state is None:
            return
        if len(self._last) >= self._limit:  # threads that exited meanwhile: drop the oldest
            del self._last[next(iter(self._last))]
        self._last[tid] = state

    def is_interpreter(self, tid: int) -> bool:
        before = self._last.pop(tid, None)
        return before is not None and before == syscall_state(tid)

    def forget(self, tid: int) -> None:
        self._last.pop(tid, None)


def held_execve(tid: int) -> tuple[str, list[str]]:
    """(the path, argv) the thread's held execve/execveat was called with, read from its registers and
    memory (the thread waits for our answer, so neither can change meanwhile; another thread of the
    process could rewrite the memory: for audits and profiles only, never a decision). ("", []) when
    unreadable; an execveat of an fd with an empty path gives the fd's target."""
    state = syscall_state(tid)
    mem = MemReader(tid)
    try:
        words = state.split() if state else []
        nr, regs = int(words[0]), [int(x, 16) for x in words[1:7]]
        if nr == _EXECVEAT:
            dirfd, path_ptr, argv_ptr = regs[0], regs[1], regs[2]
        else:
            dirfd, path_ptr, argv_ptr = -1, regs[0], regs[1]
        argv = read_argv(mem, argv_ptr)
        named = mem.read_cstring(path_ptr).decode(errors="surrogateescape")
        if not named and dirfd >= 0:
            named = os.readlink(f"/proc/{tid}/fd/{dirfd}")  # execveat(fd, "", AT_EMPTY_PATH): a memfd...
        return named, argv
    except (OSError, ValueError, IndexError):
        return "", []
    finally:
        mem.close()


def unpaired_loader(facts: ExecFacts, tid: int) -> ExecFacts:
    """Facts for a loader opened with no program exec before it, with what the thread's execve asked
    for: `ld.so PROGRAM` (the program its argv names) or a file we never saw (a memfd, a file on an
    unmarked mount), read from the waiting thread's registers and memory for the audit only."""
    loaded = f"{facts.path} (program unknown)"
    named, argv = held_execve(tid)
    if is_loader(named) or named == facts.path:
        i = loader_target(argv)
        if i is not None:
            loaded = argv[i]
    elif named:
        loaded = named
    return ExecFacts(facts.path, facts.layer, facts.ino, loaded, argv)


def decide(rule: Rule | None, container: Container, facts: ExecFacts) -> Decision:
    """The shared evaluator's exec decision; before the app has started (Garden preparing the
    container) only deny lists apply, since there is no baseline to drift from yet. The loader run
    directly is decided on the program it names, which is never in the baseline: the kernel does not
    check what the loader maps."""
    if rule is None:
        return ALLOW
    if facts.loaded is not None:
        return decide_exec(rule, facts.loaded, [facts.loaded], in_baseline=container.app_started is None)
    in_baseline = facts.layer in BASELINE_LAYERS or container.app_started is None
    return decide_exec(rule, facts.path, [facts.path], in_baseline=in_baseline)

