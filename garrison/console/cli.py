"""CLI commands of the console component: `garrison console`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from garrison.console.config import ConsoleConfig, default_data_dir


def register(app: typer.Typer) -> None:
    """Add this component's commands to the top-level `garrison` app."""
    group = typer.Typer(
        name="console",
        invoke_without_command=True,
        help="Run the console: HTTPS API + web UI and the WSS defender channel.",
    )
    group.callback()(console)
    group.command("reset-admin")(reset_admin)
    app.add_typer(group)


DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="CA, certificates, SQLite database (default ~/.garrison/console)"),
]
DbUrl = Annotated[
    str | None,
    typer.Option("--db", help="database URL: postgresql://user:pass@host/db (default: SQLite)"),
]


def reset_admin(data_dir: DataDir = None, db: DbUrl = None) -> None:
    """Set a new random password for `admin` (re-created as admin if it was removed or demoted) and
    revoke its tokens. Local only: it needs the console's data directory (and --db if not SQLite)."""
    from garrison.console.services.auth import AuthService
    from garrison.console.store.db import DatabaseUrlError
    from garrison.console.store.open import Store

    directory = (data_dir or default_data_dir()).expanduser().resolve()
    if not (directory / "ca.pem").exists():
        typer.echo(f"garrison console reset-admin: {directory} is not a console data directory", err=True)
        raise typer.Exit(2)
    try:
        store = Store.open(db, directory)
    except DatabaseUrlError as exc:
        typer.echo(f"garrison console reset-admin: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        password = AuthService(store).reset_admin()
        store.mgmt.record("local", "user.reset_admin", "admin", {"via": "garrison console reset-admin"})
    finally:
        store.engine.dispose()
    typer.echo("Reset the admin user (the password is shown only this once; its sessions were revoked):")
    typer.echo("  username: admin")
    typer.echo(f"  password: {password}")


def console(
    ctx: typer.Context,
    data_dir: DataDir = None,
    db: DbUrl = None,
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
    public_metrics: Annotated[
        bool, typer.Option("--public-metrics", help="serve /metrics without a token (default: token needed)")
    ] = False,
    public_api_docs: Annotated[
        bool,
        typer.Option(
            "--public-api-docs", help="serve the OpenAPI document without a token (default: token needed)"
        ),
    ] = False,
) -> None:
    """Run the console: HTTPS API + web UI and the WSS defender channel."""
    if ctx.invoked_subcommand is not None:
        return
    from garrison.console.replicas import ReplicaSetupError
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
        public_metrics=public_metrics,
        public_api_docs=public_api_docs,
    )
    try:
        run(cfg)
    except (DatabaseUrlError, ReplicaSetupError) as exc:
        typer.echo(f"garrison console: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"garrison console: cannot start: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
