"""`garrison defender cell`: run the cell defender on a Diego cell (root)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from garrison.policy.audit import AuditEvent
from garrison.policy.model import RuntimePolicy

if TYPE_CHECKING:
    from garrison.cell.console import CellConsoleLink


@dataclass
class CellOptions:
    policy_file: str | None = None
    runc_roots: tuple[str, ...] = ()
    audit_log: str | None = None
    duration: float = 0.0
    quiet: bool = False
    forensics_dir: str | None = None
    install_bundle: str | None = None
    data_folder: str | None = None
    connect_timeout: float = 10.0
    dns_upstreams: tuple[str, ...] = ()
    exec_responder: str = "native"
    exec_fail_closed: float = 0.0
    profile_interval: float = 60.0
    exec_watch: bool = True

DEFAULT_DATA_FOLDER = "/var/vcap/data/garrison/cell"


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
    try:
        from garrison.cell.dns import parse_upstream

        upstreams = [parse_upstream(u) for u in opts.dns_upstreams] or None
    except ValueError as exc:
        print(f"garrison cell defender: --dns-upstream: {exc}", file=sys.stderr)
        return 2
    if opts.exec_responder not in ("native", "python"):
        print("garrison cell defender: --exec-responder is native or python", file=sys.stderr)
        return 2
    keeper = None
    if opts.exec_fail_closed > 0:  # before any thread starts: the keeper is forked from this process
        from garrison.cell.fdkeeper import KeeperLink

        folder = opts.data_folder or (DEFAULT_DATA_FOLDER if opts.install_bundle else None)
        if folder is None:
            print("garrison cell defender: --exec-fail-closed needs --data-folder (the keeper's socket)",
                  file=sys.stderr)
            return 2
        try:
            Path(folder).mkdir(parents=True, exist_ok=True, mode=0o700)
            keeper = KeeperLink(Path(folder) / "exec-gate.sock", opts.exec_fail_closed)
        except OSError as exc:
            print(f"garrison cell defender: fail-closed exec gate: {exc}", file=sys.stderr)
            return 2
    link = None
    if opts.install_bundle:
        from garrison.cell.console import CellConsoleLink

        try:
            link = CellConsoleLink(decode_bundle(opts.install_bundle), Path(opts.data_folder or DEFAULT_DATA_FOLDER))
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
    no_policy = policy is None
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
                            host=link.host if link else None, dns_upstreams=upstreams,
                            exec_responder=opts.exec_responder, keeper=keeper, exec_watch=opts.exec_watch)
    defender.profile_interval = opts.profile_interval
    if link is not None:
        link.attach(defender)
    stop = threading.Event()
    started = time.monotonic()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    folder = opts.data_folder or (DEFAULT_DATA_FOLDER if link else None)
    state = RunState(Path(folder) / "run-state.json") if folder else None
    previous = state.begin() if state else None
    defender.start()
    say(opts.quiet, f"watching {', '.join(defender.roots)}; {len(defender.containers())} container(s) now")
    if previous is not None:
        emit(unclean_restart_audit(defender.host, previous))
    for control, message in startup_decisions(link, no_policy=no_policy):
        emit(AuditEvent(type="defender", effect="alert", severity="high", control=control,
                        defender_id=link.client.defender_id if link else "", message=message))
    while not stop.wait(1.0):
        if state:
            state.beat()
        if opts.duration > 0 and time.monotonic() - started >= opts.duration:
            break
    defender.stop()
    if link is not None:
        link.stop()
    if state:
        state.end()
    return 0


def startup_decisions(link: CellConsoleLink | None, *, no_policy: bool) -> list[tuple[str, str]]:
    """Start-up audits: another console's identity set aside; running with no policy (never silent)."""
    out: list[tuple[str, str]] = []
    if link is not None and link.client.identity_note:
        out.append(("identity.foreign", link.client.identity_note))
    if no_policy:
        out.append(("policy.none", "no usable policy at start (console unreachable, no cached policy of this "
                    "console): containers are watched, nothing is enforced until the console answers"))
    return out


class RunState:
    """A small file that tells the next start whether this run ended cleanly and when it was last
    alive: after a crash (or SIGKILL) the restarted defender reports the unprotected window."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def begin(self) -> dict[str, float] | None:
        """Start a run; the previous run's state when it did not end cleanly."""
        prev = None
        try:
            doc = json.loads(self.path.read_text())
            if isinstance(doc, dict) and not doc.get("clean") and isinstance(doc.get("beat"), (int, float)):
                prev = {"beat": float(doc["beat"]), "pid": float(doc.get("pid") or 0)}
        except (OSError, ValueError):
            pass
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.beat()
        return prev

    def beat(self, clean: bool = False) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "beat": time.time(), "clean": clean}))
        os.replace(tmp, self.path)

    def end(self) -> None:
        self.beat(clean=True)


def unclean_restart_audit(host: str, previous: dict[str, float]) -> AuditEvent:
    gap = max(0.0, time.time() - previous["beat"])
    return AuditEvent(
        defender_id=f"cell:{host}", type="defender", effect="info", severity="high", control="cell.unclean_restart",
        extra={"cell": host, "last_alive": previous["beat"], "gap_s": round(gap, 1)},
        message=f"the cell defender had stopped without a clean shutdown (pid {int(previous['pid'])}); for up to "
                f"{gap:.1f}s no exec was gated and no audit taken in the containers on {host}; nftables rules, "
                "pids limits and the memfd sysctl stayed in force and DNS queries failed (resolver gone); "
                "every container is protected again now",
    )
