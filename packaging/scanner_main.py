"""Entry point frozen into the standalone scanner (`dist/garrison-scanner`, built by scripts/build-scanner).

It registers only the scanner's commands (`scan`, `db`, `buildpack`) — no console, defender or web
framework — so it can be vendored into the staging buildpack (`garrison buildpack export --binary`)
and run in a staging container that has no Python: `garrison-scanner scan droplet.tgz` behaves exactly
like `garrison scan droplet.tgz`.
"""

from __future__ import annotations

import sys

import typer

from garrison import __version__
from garrison.scan import cli as scan_cli


def app() -> typer.Typer:
    a = typer.Typer(
        name="garrison",
        help="Garrison scanner (standalone): droplets and hosts, OSV database, staging buildpack.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )

    @a.callback()
    def _root() -> None:
        """Garrison's droplet scanner, standalone."""

    @a.command()
    def version() -> None:
        """Print the Garrison version."""
        typer.echo(__version__)

    scan_cli.register(a)
    return a


def main() -> None:
    if sys.argv[1:2] == ["--version"]:
        print(__version__)
        return
    app()(prog_name="garrison")


if __name__ == "__main__":
    main()
