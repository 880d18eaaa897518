"""`garrison demo` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="where the console and defender keep state")
    ] = Path("garrison-demo"),
    host: Annotated[str, typer.Option(help="address the console and sample app listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="console HTTPS port (0 = any free)")] = 8083,
    defender_port: Annotated[
        int, typer.Option("--defender-port", help="defender channel port (0 = any)")
    ] = 8084,
    app_port: Annotated[int, typer.Option("--app-port", help="the sample app's $PORT")] = 8080,
    exit_after: Annotated[float | None, typer.Option("--exit-after", help="stop after N seconds")] = None,
    write_droplet: Annotated[
        Path | None,
        typer.Option(
            "--write-droplet",
            help="only write a CF droplet of the sample app here (to try `garrison embed`), then exit",
        ),
    ] = None,
) -> None:
    """Console on embedded SQLite + a sample app protected by the app-embedded defender."""
    if write_droplet is not None:
        from garrison.demo.droplet import START_COMMAND, write_sample_droplet

        write_sample_droplet(write_droplet)
        typer.echo(f"{write_droplet}: droplet of the sample app (start command: {START_COMMAND})")
        raise typer.Exit(0)
    from garrison.demo.runner import DemoError, run_demo

    try:
        code = run_demo(data_dir.resolve(), host, port, defender_port, app_port, exit_after)
    except DemoError as exc:
        typer.echo(f"garrison demo: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)
