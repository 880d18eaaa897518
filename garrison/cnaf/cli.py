"""CLI commands of the cnaf component: run the proxy standalone, or inspect one request offline."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, TextIO

import typer

from garrison.policy.audit import AuditEvent
from garrison.policy.cnaf import CnafControls

cnaf_app = typer.Typer(help="CNAF: the inline application firewall for front-end apps.", no_args_is_help=True)


def _hostport(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise typer.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint=option)
    return (host.strip("[]") or "0.0.0.0"), int(port)


@cnaf_app.command("proxy")
def proxy_cmd(
    upstream: Annotated[str, typer.Option(help="the app, HOST:PORT")],
    policy: Annotated[Path, typer.Option(help="CNAF controls, a rule or a runtime policy (JSON/YAML)")],
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on")] = "0.0.0.0:8080",
    rule: Annotated[str | None, typer.Option(help="rule name, when --policy is a runtime policy")] = None,
    audit_log: Annotated[Path | None, typer.Option(help="append audit events here (JSON lines)")] = None,
) -> None:
    """Run the CNAF reverse proxy in front of an app; the policy file is re-read when it changes."""
    from garrison.cnaf.policy_file import PolicyFileError, load_controls

    lhost, lport = _hostport(listen, "--listen")
    uhost, uport = _hostport(upstream, "--upstream")
    try:
        controls: list[CnafControls] = [load_controls(policy, rule)]
    except PolicyFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    out: TextIO = audit_log.open("a", encoding="utf-8") if audit_log else sys.stdout

    def sink(ev: AuditEvent) -> None:
        out.write(ev.model_dump_json() + "\n")
        out.flush()

    async def watch() -> None:
        mtime = policy.stat().st_mtime
        while True:
            await asyncio.sleep(2)
            with contextlib.suppress(OSError):
                m = policy.stat().st_mtime
                if m != mtime:
                    mtime = m
                    try:
                        controls[0] = load_controls(policy, rule)
                        typer.echo(f"policy reloaded from {policy}", err=True)
                    except PolicyFileError as exc:
                        typer.echo(f"error: {exc} (keeping the previous policy)", err=True)

    async def main() -> None:
        from garrison.cnaf import crs
        from garrison.cnaf.proxy import serve

        server = await serve(lhost, lport, uhost, uport, lambda: controls[0], sink)
        typer.echo(f"CNAF listening on {lhost}:{server.port} → {uhost}:{uport}", err=True)

        async def report_crs() -> None:
            if await asyncio.get_running_loop().run_in_executor(None, crs.ruleset) is not None:
                typer.echo(crs.status(), err=True)  # a missing rule set was already reported

        reporter = asyncio.create_task(report_crs())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watcher = asyncio.create_task(watch())
        await stop.wait()
        watcher.cancel()
        reporter.cancel()
        server.close()
        await server.wait_closed()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        asyncio.run(main())


@cnaf_app.command("inspect")
def inspect_cmd(
    target: Annotated[str, typer.Argument(help="request target, e.g. '/search?q=1%27%20or%201=1'")],
    method: Annotated[str, typer.Option(help="HTTP method")] = "GET",
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="'Name: value', repeatable")
    ] = None,
    data: Annotated[str | None, typer.Option(help="request body")] = None,
    policy: Annotated[Path | None, typer.Option(help="controls file (default: every class on)")] = None,
) -> None:
    """Run the detection engine on one request offline and print the findings as JSON."""
    from garrison.cnaf.engine import inspect
    from garrison.cnaf.policy_file import PolicyFileError, load_controls
    from garrison.cnaf.request import HttpRequest

    try:
        controls = load_controls(policy) if policy else CnafControls()
    except PolicyFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    headers: list[tuple[str, str]] = [("Host", "localhost")]
    for h in header or []:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected 'Name: value', got {h!r}", param_hint="--header")
        headers.append((name.strip(), value.strip()))
    req = HttpRequest(method=method.upper(), target=target, headers=headers, body=(data or "").encode())
    from garrison.cnaf import crs

    if controls.crs.enabled and crs.ruleset() is not None:
        typer.echo(crs.status(), err=True)
    findings = inspect(req, controls)
    typer.echo(json.dumps([dataclasses.asdict(f) for f in findings], indent=2))
    raise typer.Exit(1 if findings else 0)


def register(app: typer.Typer) -> None:
    """Add this component's commands to the top-level `garrison` app."""
    app.add_typer(cnaf_app, name="cnaf")
