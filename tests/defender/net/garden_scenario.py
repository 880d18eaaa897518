"""Run the guard with the supervisor itself under a Garden-like seccomp filter (EPERM for
pidfd_open, pidfd_getfd, process_vm_readv — as cloudfoundry/guardian's default profile), so the
guard's fallbacks are exercised for real. Prints a JSON result. Run inside the test namespace.

argv: HOST
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import time

from servers import TcpServer  # type: ignore[import-not-found]

from garrison.defender.net import TRAP_ONLY_IF_ARG_NONZERO, NetworkGuard
from garrison.defender.net.standalone import StandaloneContext, Supervised
from garrison.kernel import pidfd, seccomp
from garrison.policy.model import Rule

GARDEN_BLOCKED = {"pidfd_open": 434, "pidfd_getfd": 438, "process_vm_readv": 310}
SECCOMP_FILTER_FLAG_TSYNC = 1


def garden_filter() -> None:
    prog = [(0x20, 0, 0, 0)]
    for nr in GARDEN_BLOCKED.values():
        prog.append((0x15, 0, 1, nr))
        prog.append((0x06, 0, 0, 0x00050000 | errno.EPERM))
    prog.append((0x06, 0, 0, 0x7FFF0000))
    # every thread of this process, the supervisor's included (privileged: no no_new_privs needed)
    if seccomp.install_filter(prog, listener=False, flags=SECCOMP_FILTER_FLAG_TSYNC) != 0:
        raise OSError("garden-like filter: a thread could not be synchronised")


def main() -> None:
    host = sys.argv[1]
    ok, bad = TcpServer(host), TcpServer(host)
    rule = Rule.model_validate(
        {"name": "garden", "network": {"effect": "prevent", "outbound": {"deny": [f"{host}:{bad.port}"]}}}
    )
    ctx = StandaloneContext(rule)
    guard = NetworkGuard(ctx, upstreams=[])
    guard.start()
    code = "import socket,sys\nfor p in sys.argv[2:]:\n s=socket.socket(); print(p, s.connect_ex((sys.argv[1],int(p))))"
    sup = Supervised(
        ["/usr/bin/python3", "-c", code, host, str(ok.port), str(bad.port)],
        guard.handlers,
        ctx,
        nonzero_arg=TRAP_ONLY_IF_ARG_NONZERO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    garden_filter()
    try:
        pidfd.pidfd_open(1)
        blocked = False
    except OSError as exc:
        blocked = exc.errno == errno.EPERM
    rc, out, err = sup.communicate(timeout=60)
    time.sleep(0.2)
    guard.stop()
    print(
        json.dumps(
            {
                "blocked": blocked,
                "rc": rc,
                "out": out,
                "err": err,
                "stats": guard.stats,
                "guarantee": guard.guarantee,
                "ok": ok.port,
                "bad": bad.port,
                "accepted_ok": ok.accepted,
                "accepted_bad": bad.accepted,
                "audits": [a.control for a in ctx.audits],
            }
        )
    )


if __name__ == "__main__":
    main()
