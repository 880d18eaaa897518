"""CLI commands of the console component: `garrison console`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from garrison.console.config import ConsoleConfig, default_data_dir


def register(app: typer.Typer) -> None:
    """Add this component's commands to the top-level `garrison` app."""
    app.command("console")(console)


def console(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="CA, certificates, SQLite database (default ~/.garrison/console)"),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option("--db", help="database URL: postgresql://user:pass@host/db (default: SQLite)"),
    ] = None,
    host: Annotated[str, typer.Option(help="bind address")] = "0.0.0.0",
    port: Annotated[
        int, typer.Option(help="HTTPS port (API + UI); 0 = any free port", min=0, max=65535)
    ] = 8083,
    defender_port: Annotated[
        int,
        typer.Option("--defender-port", help="WSS port for defenders; 0 = any free port", min=0, max=65535),
    ] = 8084,
    public_address: Annotated[
        str | None, typer.Option("--public-address", help="host name/IP defenders and browsers use")
    ] = None,
    blobstore: Annotated[Path | None, typer.Option(help="droplet blobstore folder to rescan")] = None,
    blobstore_poll: Annotated[
        float,
        typer.Option(
            "--blobstore-poll", help="seconds between blobstore polls (new droplets, DB imports)", min=0.1
        ),
    ] = 60.0,
) -> None:
    """Run the console: HTTPS API + web UI and the WSS defender channel."""
    from garrison.console.server import run
    from garrison.console.store.db import DatabaseUrlError

    cfg = ConsoleConfig(
        data_dir=(data_dir or default_data_dir()).expanduser().resolve(),
        db_url=db,
        host=host,
        port=port,
        defender_port=defender_port,
        public_address=public_address,
        blobstore=blobstore.resolve() if blobstore else None,
        blobstore_poll_s=blobstore_poll,
    )
    try:
        run(cfg)
    except DatabaseUrlError as exc:
        typer.echo(f"garrison console: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"garrison console: cannot start: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
