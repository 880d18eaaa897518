"""`garrison defender cell`: run the cell defender on a Diego cell (root)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from garrison.policy.audit import AuditEvent
from garrison.policy.model import RuntimePolicy


@dataclass
class CellOptions:
    policy_file: str | None = None
    runc_roots: tuple[str, ...] = ()
    audit_log: str | None = None
    duration: float = 0.0
    quiet: bool = False
    forensics_dir: str | None = None
    install_bundle: str | None = None
    data_folder: str = "/var/vcap/data/garrison/cell"
    connect_timeout: float = 10.0


def say(quiet: bool, text: str) -> None:
    if not quiet:
        print(f"garrison cell defender: {text}", file=sys.stderr, flush=True)


def run(opts: CellOptions) -> int:
    from garrison.cell.containers import RUNC_ROOTS
    from garrison.cell.defender import CellDefender
    from garrison.cell.forensics import ForensicLog
    from garrison.channel.bundle import BundleError, decode_bundle
    from garrison.defender.launch import LaunchError, load_policy_file

    if os.geteuid() != 0:
        print("garrison cell defender: must run as root (fanotify permission events, cgroups)", file=sys.stderr)
        return 2
    if not opts.policy_file and not opts.install_bundle:
        print("garrison cell defender: give --install-bundle (console) or --policy (a file), or both",
              file=sys.stderr)
        return 2
    link = None
    if opts.install_bundle:
        from garrison.cell.console import CellConsoleLink

        try:
            link = CellConsoleLink(decode_bundle(opts.install_bundle), Path(opts.data_folder))
        except (BundleError, OSError) as exc:
            print(f"garrison cell defender: {exc}", file=sys.stderr)
            return 2
    policy: RuntimePolicy | None = None
    if link is not None:
        policy, how = link.first_policy(opts.connect_timeout)
        say(opts.quiet, how)
    if policy is None and opts.policy_file:
        try:
            policy = load_policy_file(opts.policy_file)  # the same policy files the app-embedded defender reads
        except LaunchError as exc:
            print(f"garrison cell defender: {exc}", file=sys.stderr)
            return 2
        if link is not None:
            say(opts.quiet, f"using {opts.policy_file} until the console answers")
    if policy is None:
        # Containers are still discovered and reported; the console's policy applies when it arrives.
        say(opts.quiet, "NO POLICY yet: containers are watched, nothing is enforced until the console answers")
        policy = RuntimePolicy()
    out = open(opts.audit_log, "a", buffering=1) if opts.audit_log else (None if link else sys.stdout)  # noqa: SIM115
    lock = threading.Lock()

    def emit(ev: AuditEvent) -> None:
        if link is not None:
            link.emit(ev)
        if out is not None:
            with lock:
                out.write(ev.model_dump_json() + "\n")
                out.flush()

    forensics = ForensicLog(Path(opts.forensics_dir)) if opts.forensics_dir else None
    defender = CellDefender(policy, emit, roots=opts.runc_roots or RUNC_ROOTS, forensics=forensics,
                            host=link.host if link else None)
    if link is not None:
        link.attach(defender)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    defender.start()
    say(opts.quiet, f"watching {', '.join(defender.roots)}; {len(defender.containers())} container(s) now")
    stop.wait(opts.duration if opts.duration > 0 else None)
    defender.stop()
    if link is not None:
        link.stop()
    return 0
