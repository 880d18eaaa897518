"""Child side of the standalone runner: drop privileges, install the notify filter, hand the
listener to the parent (which takes it with pidfd_getfd), then exec the app.

argv: READY_FD ACK_FD UID GID NAMES NONZERO -- PROGRAM ARGS...
"""

from __future__ import annotations

import os
import sys

from garrison.kernel import prctl, seccomp


def main(argv: list[str]) -> None:
    ready, ack, uid, gid, names, nonzero = argv[:6]
    prog = argv[7:]
    if int(uid) >= 0 and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(int(gid))
        os.setuid(int(uid))
    cond = {k: int(v) for k, v in (p.split("=") for p in nonzero.split(",") if p)}
    trapped = {n for n in names.split(",") if n and n not in cond}
    prctl.set_no_new_privs()
    listener, _killable = seccomp.install_listener(
        seccomp.build_filter(seccomp.FilterSpec(notify=trapped, notify_if_arg_nonzero=cond))
    )
    os.write(int(ready), str(listener).encode())
    os.close(int(ready))
    if os.read(int(ack), 1) != b"1":
        os._exit(70)
    os.close(int(ack))
    os.close(listener)
    try:
        os.execvp(prog[0], prog)
    except OSError as exc:
        sys.stderr.write(f"cannot run {prog[0]}: {exc}\n")
        os._exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
