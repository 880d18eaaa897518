"""Exec allow/deny and drift for every container, in the kernel's path: fanotify FAN_OPEN_EXEC_PERM
marked on each container's overlay root holds every execve until it is answered.

Which file is about to run comes from the event's fd, not from a path the app controls:
- the container is the one whose overlay has that fd's device;
- the path is the fd's path inside the container;
- **drift**: a file of the upper layer (written into the container, or a rootfs file modified and so
  copied up) is in the baseline only if it was there before the app process started (the droplet
  Garden streams in first); a file of a lower layer (the rootfs image) must have the inode the overlay
  reports for the fd. Anything else, or anything we cannot identify, is drift."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from garrison.cell.containers import Container
from garrison.policy.evaluate import ALLOW, Decision, decide_exec
from garrison.policy.model import Rule


@dataclass(frozen=True)
class ExecFacts:
    path: str  # as the container sees it
    layer: str  # lower | upper-baseline | upper-new | unknown
    ino: int


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
            started = container.app_started
            if started is not None and up.st_ctime < started:
                return ExecFacts(path, "upper-baseline", st.st_ino)
            return ExecFacts(path, "upper-new", st.st_ino)
    if _lower_has(layers.lower, rel, st.st_ino):
        return ExecFacts(path, "lower", st.st_ino)
    return ExecFacts(path, "unknown", st.st_ino)


def decide(rule: Rule | None, container: Container, facts: ExecFacts) -> Decision:
    """The shared evaluator's exec decision; before the app has started (Garden preparing the
    container) only deny lists apply, since there is no baseline to drift from yet."""
    if rule is None:
        return ALLOW
    in_baseline = facts.layer in ("lower", "upper-baseline") or container.app_started is None
    return decide_exec(rule, facts.path, [facts.path], in_baseline=in_baseline)
