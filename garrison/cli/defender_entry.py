"""The `defender` executable: `defender app-embedded <prog> <args>` == `garrison defender app-embedded ...`.

CF manifests use `command: defender app-embedded <prog> ...`, so this name must exist on its own. It loads only
the defender's CLI (not every component's), because import time is added to the app's start-up.
"""

from __future__ import annotations

import sys


def run(args: list[str], prog_name: str = "defender") -> None:
    """`defender ARGS` (or `garrison defender ARGS`) with only the defender's commands loaded."""
    import typer

    from garrison.defender import cli as defender_cli

    group = defender_cli.group()
    group.pretty_exceptions_enable = False
    if prog_name == "defender":
        # the group itself is the program: `Usage: defender app-embedded ...` (get_group keeps
        # app-embedded a sub-command although it is the group's only command)
        typer.main.get_group(group)(args=args, prog_name=prog_name)
        return
    app = typer.Typer(name="defender", no_args_is_help=True, pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """Garrison app-embedded defender."""

    app.add_typer(group)
    app(args=["defender", *args], prog_name=prog_name)


def main() -> None:
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
