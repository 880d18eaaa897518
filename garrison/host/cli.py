"""`garrison host ...`: the cell's own security checks, usable without the cell defender.

Exit codes: 0 = compliant / no change, 1 = policy failure or changes found, 2 = error."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from garrison.host.fim import Watchlist
from garrison.host.model import CisReport, HostEvent
from garrison.host.posture import CellPolicy

host_app = typer.Typer(help="The cell's own security: CIS benchmark, file integrity, user access, host scan.",
                       no_args_is_help=True)
fim_app = typer.Typer(help="File integrity monitoring: baseline, rescan, live watch.", no_args_is_help=True)
host_app.add_typer(fim_app, name="fim")

_out = Console()
_err = Console(stderr=True)

StateOpt = Annotated[
    Path,
    typer.Option("--state", help="State directory (baseline, offsets, history)", envvar="GARRISON_HOST_STATE"),
]
_DEFAULT_STATE = Path("/var/vcap/data/garrison/host") if os.path.isdir("/var/vcap/data") else (
    Path.home() / ".garrison" / "host"
)


def _fail(msg: str) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _emit(ev: HostEvent, as_json: bool) -> None:
    if as_json:
        print(ev.model_dump_json(), flush=True)
    else:
        _out.print(f"[{ev.severity}] {ev.type}/{ev.action}: {ev.message}", highlight=False, soft_wrap=True)


@host_app.command("cis")
def cis_command(
    root: Annotated[Path, typer.Option("--root", help="Evaluate a mounted root filesystem (as oscap-chroot)")] = Path("/"),
    profile: Annotated[str, typer.Option(help="cis_level1_server | cis_level2_server | ...")] = "cis_level1_server",
    datastream: Annotated[Path | None, typer.Option(help="SCAP data stream (default: chosen from the release)")] = None,
    policy: Annotated[Path | None, typer.Option(help="Cell assurance policy (YAML/JSON)")] = None,
    state: StateOpt = _DEFAULT_STATE,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run the CIS benchmark with OpenSCAP; store the result for trends; judge the cell policy."""
    from garrison.host.cis import CisError, run_cis
    from garrison.host.posture import CellPolicy, PostureStore, judge

    cell_policy = _load_policy(policy) if policy else CellPolicy()
    try:
        report = run_cis(root, profile, datastream)
    except CisError as exc:
        raise _fail(str(exc)) from exc
    store = PostureStore(state / "posture.db")
    try:
        store.add_cis(report)
        verdict, reasons = judge(cell_policy, report, None)
        drift = store.record_verdict(verdict, reasons, report.host)
    finally:
        store.close()
    if as_json:
        doc = report.model_dump(mode="json")
        doc["verdict"], doc["reasons"] = verdict, reasons
        print(json.dumps(doc))
    else:
        _print_cis(report, verdict, reasons)
    if drift:
        _emit(drift, as_json=False)
    raise typer.Exit(1 if verdict == "fail" else 0)


def _load_policy(path: Path) -> CellPolicy:
    from garrison.host.posture import CellPolicy
    from garrison.policy.files import PolicyFileError, load_model

    try:
        return load_model(path, CellPolicy)
    except PolicyFileError as exc:
        raise _fail(f"cell policy {exc}") from exc


def _print_cis(report: CisReport, verdict: str, reasons: list[str]) -> None:
    if not report.applicable:
        _out.print(f"[yellow]CIS {report.profile} not evaluated:[/] {report.reason}", soft_wrap=True)
    else:
        _out.print(f"CIS {report.profile} on {report.host} ({report.root}): score [bold]{report.score}[/] "
                   f"({', '.join(f'{k} {v}' for k, v in sorted(report.counts.items()))})")
        table = Table("severity", "rule", "title")
        for rule in report.failed():
            table.add_row(rule.severity, rule.id.removeprefix("xccdf_org.ssgproject.content_rule_"), rule.title)
        if report.failed():
            _out.print(table)
    _out.print(f"verdict: [bold]{verdict}[/]" + "".join(f"\n  - {r}" for r in reasons))


PathsOpt = Annotated[list[str] | None, typer.Option("--path", help="Monitored root (repeat); default: the cell's")]
ExcludeOpt = Annotated[list[str] | None, typer.Option("--exclude", help="Glob to leave out (repeat)")]


def _watchlist(paths: list[str] | None, excludes: list[str] | None) -> Watchlist:
    from garrison.host.fim import DEFAULT_EXCLUDES, DEFAULT_PATHS, Watchlist

    return Watchlist(paths or DEFAULT_PATHS, (*DEFAULT_EXCLUDES, *(excludes or ())))


@fim_app.command("baseline")
def fim_baseline(paths: PathsOpt = None, exclude: ExcludeOpt = None, state: StateOpt = _DEFAULT_STATE) -> None:
    """Record the accepted state (hash, mode, owner, size, ctime) of every monitored path."""
    from garrison.host.fim import Baseline

    base = Baseline(state / "fim.db")
    start = time.monotonic()
    with _out.status("hashing monitored files...") as status:
        n = base.build(_watchlist(paths, exclude), progress=lambda k: status.update(f"hashed {k} files..."))
    base.close()
    _out.print(f"baseline: {n} paths in {time.monotonic() - start:.1f} s -> {state / 'fim.db'}")


@fim_app.command("check")
def fim_check(
    paths: PathsOpt = None, exclude: ExcludeOpt = None, state: StateOpt = _DEFAULT_STATE,
    accept: Annotated[bool, typer.Option(help="Take the changes into the baseline after reporting")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rescan against the baseline: what changed while nothing was watching. Exit 1 on changes."""
    from garrison.host import fim

    if not (state / "fim.db").exists():
        raise _fail(f"no baseline in {state}: run `garrison host fim baseline` first")
    base = fim.Baseline(state / "fim.db")
    events = fim.rescan(base, _watchlist(paths, exclude), socket.gethostname())
    for ev in events:
        _emit(ev, as_json)
    if accept:
        fim.accept(base, events)
    base.close()
    raise typer.Exit(1 if events else 0)


@fim_app.command("watch")
def fim_watch(
    paths: PathsOpt = None, exclude: ExcludeOpt = None, state: StateOpt = _DEFAULT_STATE,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0 = run until killed)")] = 0,
    inotify: Annotated[bool, typer.Option("--inotify", help="Use inotify even where fanotify works")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rescan once (what happened while down), then report each change live, with who made it."""
    from garrison.host import fim
    from garrison.host.fim_live import LiveMonitor

    if not (state / "fim.db").exists():
        raise _fail(f"no baseline in {state}: run `garrison host fim baseline` first")
    base = fim.Baseline(state / "fim.db")
    watch = _watchlist(paths, exclude)
    mon = LiveMonitor(base, watch, lambda ev: _emit(ev, as_json), force_inotify=inotify)
    _err.print(f"watching {', '.join(watch.roots)} with {mon.mechanism}", soft_wrap=True)
    for ev in fim.rescan(base, watch, mon.host):
        _emit(ev, as_json)
    end = time.monotonic() + duration if duration else None
    try:
        mon.run(until=lambda: end is not None and time.monotonic() >= end)
    except KeyboardInterrupt:
        pass
    finally:
        mon.close()
        base.close()


@host_app.command("access")
def access_command(
    state: StateOpt = _DEFAULT_STATE,
    auth_log: Annotated[list[str] | None, typer.Option("--auth-log", help="Syslog auth file (repeat)")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep polling every --interval seconds")] = False,
    interval: float = 2.0,
    duration: Annotated[float, typer.Option(help="With --follow: stop after this many seconds")] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Logins, failures, sudo/su, account and SSH key changes since the last run."""
    from garrison.host.access import AUTH_LOGS, AccessMonitor

    mon = AccessMonitor(state / "access.json", auth_logs=tuple(auth_log or AUTH_LOGS))
    end = time.monotonic() + duration if duration else None
    while True:
        for ev in mon.poll():
            _emit(ev, as_json)
        if not follow or (end is not None and time.monotonic() >= end):
            break
        time.sleep(interval)


@host_app.command("scan")
def host_scan(
    root: Annotated[Path, typer.Option("--root")] = Path("/"),
    db: Annotated[Path | None, typer.Option("--db", help="Vulnerability DB directory")] = None,
    policy: Annotated[Path | None, typer.Option(help="Cell assurance policy (YAML/JSON)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The scanner's host mode (packages, secrets, malware) judged by the cell policy's package rules."""
    from garrison.host.posture import CellPolicy, judge
    from garrison.scan.scanner import ScanOptions, ScanRefused, scan

    cell_policy = _load_policy(policy) if policy else CellPolicy()
    try:
        report = scan(root, ScanOptions(db_dir=db, host=True, secrets=True, policy=cell_policy.packages))
    except (ScanRefused, OSError) as exc:
        raise _fail(str(exc)) from exc
    verdict, reasons = judge(cell_policy, None, report)
    if as_json:
        doc = report.model_dump(mode="json")
        doc["cell_verdict"], doc["cell_reasons"] = verdict, reasons
        print(json.dumps(doc))
    else:
        _out.print(f"host {root}: {len(report.packages)} packages, {len(report.vulnerabilities)} "
                   f"vulnerabilities, {len(report.malware)} malware; verdict [bold]{verdict}[/]"
                   + "".join(f"\n  - {r}" for r in reasons))
    raise typer.Exit(1 if verdict == "fail" else 0)


@host_app.command("agent")
def agent_command(
    console: Annotated[str | None, typer.Option(help="Console URL (or GARRISON_CONSOLE_URL)")] = None,
    token: Annotated[str | None, typer.Option(help="API token (or GARRISON_TOKEN)")] = None,
    cacert: Annotated[str | None, typer.Option(help="Console CA (PEM) (or GARRISON_CA_CERT)")] = None,
    name: Annotated[str | None, typer.Option(help="Host name the console shows (default: hostname)")] = None,
    state: StateOpt = _DEFAULT_STATE,
    paths: PathsOpt = None,
    exclude: ExcludeOpt = None,
    profile: str = "cis_level1_server",
    cis_every: Annotated[float, typer.Option(help="Hours between CIS runs (0 = only at start)")] = 24,
    scan_root: Annotated[Path | None, typer.Option(help="Host scan root (default /; --no-scan to skip)")] = None,
    scan: Annotated[bool, typer.Option("--scan/--no-scan")] = True,
    scan_every: Annotated[float, typer.Option(help="Hours between host scans")] = 24,
    db: Annotated[Path | None, typer.Option("--db", help="Vulnerability DB directory")] = None,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0 = until killed)")] = 0,
) -> None:
    """Run the cell's own security continuously and report to the console: live file integrity,
    user access, CIS benchmark and host scan on a schedule."""
    from garrison.host import fim
    from garrison.host.access import AccessMonitor
    from garrison.host.cis import CisError, run_cis
    from garrison.host.fim_live import LiveMonitor
    from garrison.host.report import HostReporter
    from garrison.scan.console import ConsoleConfig, ConsoleError
    from garrison.scan.scanner import ScanOptions, ScanRefused
    from garrison.scan.scanner import scan as run_scan

    cfg = ConsoleConfig.from_env(console, token=token, ca_cert=cacert)
    if cfg is None:
        raise _fail("no console: give --console or set GARRISON_CONSOLE_URL")
    host = name or socket.gethostname()
    rep = HostReporter(cfg, host)
    watch = _watchlist(paths, exclude)
    base = fim.Baseline(state / "fim.db")
    if base.count() == 0:
        _err.print(f"building the file-integrity baseline of {', '.join(watch.roots)} ...")
        base.build(watch)
    mon = LiveMonitor(base, watch, rep.queue, host=host)
    for ev in fim.rescan(base, watch, host):  # what changed while the agent was not running
        rep.queue(ev)
    access = AccessMonitor(state / "access.json", host=host)
    _err.print(f"garrison host agent on {host}: FIM with {mon.mechanism}; reporting to {cfg.url}", soft_wrap=True)
    now = time.monotonic()
    end = now + duration if duration else None
    next_cis, next_scan, next_flush = now, now if scan else float("inf"), now
    try:
        while end is None or time.monotonic() < end:
            mon.poll(0.25)
            now = time.monotonic()
            if now >= next_flush:
                for ev in access.poll():
                    rep.queue(ev)
                rep.flush()
                next_flush = now + 1.0
            if now >= next_cis:
                try:
                    verdict = rep.send_cis(run_cis(Path("/"), profile, host=host))
                    _err.print(f"CIS {profile}: {verdict['verdict']}")
                except (CisError, ConsoleError) as exc:
                    _err.print(f"[yellow]CIS run not reported:[/] {exc}", soft_wrap=True)
                next_cis = now + cis_every * 3600 if cis_every else float("inf")
            if now >= next_scan:
                try:
                    report = run_scan(scan_root or Path("/"), ScanOptions(db_dir=db, host=True, secrets=True))
                    _err.print(f"host scan: {rep.send_scan(report)['verdict']}")
                except (ScanRefused, OSError, ConsoleError) as exc:
                    _err.print(f"[yellow]host scan not reported:[/] {exc}", soft_wrap=True)
                next_scan = time.monotonic() + scan_every * 3600
    except KeyboardInterrupt:
        pass
    finally:
        rep.flush()
        mon.close()
        base.close()


def register(app: typer.Typer) -> None:
    app.add_typer(host_app, name="host")
