"""CLI commands of the defender component: `garrison defender app-embedded PROGRAM ARGS...`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from garrison.defender.argv import (
    CONNECT_TIMEOUT_ENV,
    DEFAULT_CONNECT_TIMEOUT,
    FAIL_OPEN_ENV,
    POLICY_ENV,
    run_app_embedded,
)

if TYPE_CHECKING:
    from garrison.defender.launch import Options

_CTX = {"allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False}


def register(app: typer.Typer) -> None:
    """Add this component's commands to the top-level `garrison` app."""
    app.add_typer(group())


def group(run_app: Callable[[list[str], Options], int] = run_app_embedded) -> typer.Typer:
    """The `defender` command group (`garrison defender ...`, or on its own as `defender ...`).
    `run_app` runs `app-embedded` (the tests pass one that records what typer read)."""
    group = typer.Typer(name="defender", help="The app-embedded defender.", no_args_is_help=True)

    @group.command("app-embedded", context_settings=_CTX)
    def app_embedded(
        program: list[str] = typer.Argument(None, help="the app's command line"),
        policy: str = typer.Option(
            None,
            "--policy",
            envvar=POLICY_ENV,
            help="runtime policy file (JSON/YAML) instead of the console",
        ),
        fail_open: bool = typer.Option(
            False,
            "--fail-open",
            envvar=FAIL_OPEN_ENV,
            help="start even without a policy or enforcement",
        ),
        connect_timeout: float = typer.Option(
            DEFAULT_CONNECT_TIMEOUT,
            "--connect-timeout",
            envvar=CONNECT_TIMEOUT_ENV,
            help="seconds to wait for the console",
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no start-up report"),
    ) -> None:
        """Run PROGRAM under the defender: it becomes the app's parent and enforces the runtime policy."""
        from garrison.defender.launch import Options

        opts = Options(policy_file=policy, fail_open=fail_open, connect_timeout=connect_timeout, quiet=quiet)
        raise typer.Exit(run_app(list(program or []), opts))

    @group.command("cell")
    def cell(
        policy: str = typer.Option(
            None, "--policy", envvar="DEFENDER_POLICY_FILE",
            help="runtime policy file (used when there is no console, or it has not answered yet)",
        ),
        install_bundle: str = typer.Option(
            None, "--install-bundle", envvar="INSTALL_BUNDLE",
            help="the console's cell install bundle (Deploy page: Diego cells)",
        ),
        data_folder: str = typer.Option(
            None, "--data-folder", envvar="DATA_FOLDER",
            help="certificate, event spool, cached policy, run state (default with a bundle: "
                 "/var/vcap/data/garrison/cell)",
        ),
        dns_upstream: list[str] = typer.Option(
            None, "--dns-upstream", help="resolver the containers' DNS is forwarded to (repeat; default: the cell's)"
        ),
        connect_timeout: float = typer.Option(10.0, "--connect-timeout", help="seconds to wait for the console"),
        runc_root: list[str] = typer.Option(
            None, "--runc-root", help="runc state root (repeat); default: Garden's"
        ),
        audit_log: str = typer.Option(
            None, "--audit-log", help="also append audits (JSON lines) here"
        ),
        duration: float = typer.Option(
            0, "--duration", help="stop after this many seconds (0 = until killed)"
        ),
        forensics_dir: str = typer.Option(
            None, "--forensics-dir", help="per-container process and connection trail (JSON lines, 0600)"
        ),
        profile_interval: float = typer.Option(
            60.0, "--profile-interval", envvar="DEFENDER_PROFILE_INTERVAL", min=0.2,
            help="seconds between learning reports of each learning container",
        ),
        exec_responder: str = typer.Option(
            "native", "--exec-responder",
            help="native: execs answered from a verdict cache in a native thread (unknown files in Python); "
                 "python: every exec answered in Python",
        ),
        exec_fail_closed: float = typer.Option(
            0, "--exec-fail-closed",
            help="seconds execs are held while the defender is down (a keeper process holds the exec gate "
                 "open for its restart); 0 = fail-open",
        ),
        exec_watch: bool = typer.Option(
            True, "--exec-watch/--no-exec-watch",
            help="code run without an exec seen from the kernel (BPF tracepoints, built at install "
                 "with clang): memfd executables reported, dropped libraries mapped executable refused",
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q"),
    ) -> None:
        """The cell defender (root, one per Diego cell): protects every app container on the cell."""
        from garrison.cell.cli import CellOptions, run

        raise typer.Exit(run(CellOptions(
            policy_file=policy, runc_roots=tuple(runc_root or ()), audit_log=audit_log, duration=duration,
            quiet=quiet, forensics_dir=forensics_dir, install_bundle=install_bundle, data_folder=data_folder,
            connect_timeout=connect_timeout, dns_upstreams=tuple(dns_upstream or ()),
            profile_interval=profile_interval, exec_responder=exec_responder, exec_fail_closed=exec_fail_closed,
            exec_watch=exec_watch,
        )))

    return group
