"""`garrison` command: a thin typer front; each component registers its own commands."""

from __future__ import annotations

import typer

from garrison import __version__
from garrison.cnaf import cli as cnaf_cli
from garrison.console import cli as console_cli
from garrison.defender import cli as defender_cli
from garrison.demo import cli as demo_cli
from garrison.embed import cli as embed_cli
from garrison.host import cli as host_cli
from garrison.scan import cli as scan_cli

app = typer.Typer(
    name="garrison",
    help="Runtime protection for Cloud Foundry apps: console, app-embedded defender, scanner, CNAF.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Garrison: console, app-embedded defender, droplet scanner and CNAF for Cloud Foundry apps."""


@app.command()
def version() -> None:
    """Print the Garrison version."""
    typer.echo(__version__)


for _component in (console_cli, defender_cli, scan_cli, embed_cli, cnaf_cli, demo_cli, host_cli):
    _component.register(app)
