"""`garrison defender cell`: run the cell defender on a Diego cell (root)."""

from __future__ import annotations

import os
import signal
import sys
import threading

from garrison.policy.audit import AuditEvent


def run(policy_file: str, runc_roots: list[str], audit_log: str | None, duration: float, quiet: bool,
        forensics_dir: str | None = None) -> int:
    from garrison.cell.containers import RUNC_ROOTS
    from garrison.cell.defender import CellDefender
    from garrison.defender.launch import LaunchError, load_policy_file

    if os.geteuid() != 0:
        print("garrison cell defender: must run as root (fanotify permission events, cgroups)", file=sys.stderr)
        return 2
    try:
        policy = load_policy_file(policy_file)  # the same policy files the app-embedded defender reads
    except LaunchError as exc:
        print(f"garrison cell defender: {exc}", file=sys.stderr)
        return 2
    out = open(audit_log, "a", buffering=1) if audit_log else sys.stdout  # noqa: SIM115
    lock = threading.Lock()

    def emit(ev: AuditEvent) -> None:
        with lock:
            out.write(ev.model_dump_json() + "\n")
            out.flush()

    from pathlib import Path

    from garrison.cell.forensics import ForensicLog

    forensics = ForensicLog(Path(forensics_dir)) if forensics_dir else None
    defender = CellDefender(policy, emit, roots=runc_roots or RUNC_ROOTS, forensics=forensics)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    defender.start()
    if not quiet:
        print(f"garrison cell defender: watching {', '.join(defender.roots)}; "
              f"{len(defender.containers())} container(s) now", file=sys.stderr, flush=True)
    stop.wait(duration if duration > 0 else None)
    defender.stop()
    return 0
