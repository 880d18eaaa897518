"""Run a command under a Garden-like seccomp filter (Cloud Foundry's default profile blocks these with
EPERM), so the defender's fallbacks (/proc/<pid>/mem, no Landlock, no pidfd) are exercised for real.

Usage: python -m tests.defender.gardenlike PROGRAM ARGS...
(GARDENLIKE_ALSO_BLOCK=seccomp,... blocks more, e.g. to test a host where nothing can be enforced)
"""

from __future__ import annotations

import errno
import os
import sys

from garrison.kernel import prctl, seccomp

BLOCKED = [
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_open",
    "pidfd_getfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "unshare",
    "bpf",
    "perf_event_open",
    "fanotify_init",
]


def main() -> None:
    extra = [n for n in os.environ.get("GARDENLIKE_ALSO_BLOCK", "").split(",") if n]
    spec = seccomp.FilterSpec(errno=dict.fromkeys(BLOCKED + extra, errno.EPERM), kill_foreign_abi=False)
    prctl.set_no_new_privs()
    seccomp.install_filter(seccomp.build_filter(spec), listener=False)
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
