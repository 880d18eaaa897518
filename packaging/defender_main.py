"""Entry point frozen into the standalone `defender` executable.

It registers only the defender's commands (not the console or scanner) so the bundle carries no web
framework, database driver or scanner rules: smaller, faster to start, less to patch in a droplet.
`defender <args>` behaves exactly like `garrison defender <args>`, plus `defender version`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from garrison import __version__
from garrison.cli.defender_entry import run_plain_app_embedded

if TYPE_CHECKING:
    import typer


def defender_group() -> typer.Typer:
    """The `defender` command group as the defender component registers it on the garrison app."""
    import typer

    from garrison.defender import cli as defender_cli

    app = typer.Typer()
    defender_cli.register(app)
    for g in app.registered_groups:
        if g.typer_instance is not None and "defender" in (g.name, g.typer_instance.info.name):
            return g.typer_instance
    raise SystemExit("defender: this build has no defender commands")


def main() -> None:
    args = sys.argv[1:]
    if args[:1] in (["version"], ["--version"]):
        print(__version__)
        return
    run_plain_app_embedded(args)  # the command a manifest runs: without building the typer tree
    import typer

    # get_group keeps `app-embedded` a sub-command even when it is the group's only command
    # (a bare Typer with one command would run it directly and take "app-embedded" as the program).
    typer.main.get_group(defender_group())(args=args, prog_name="defender")


if __name__ == "__main__":
    main()
