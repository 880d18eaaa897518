"""The `defender` executable: `defender app-embedded <prog> <args>` == `garrison defender app-embedded ...`.

CF manifests use `command: defender app-embedded <prog> ...`, so this name must exist on its own. It loads only
the defender's CLI (not every component's), because import time is added to the app's start-up.
"""

from __future__ import annotations

import sys


def run_plain_app_embedded(args: list[str]) -> None:
    """`app-embedded` with a plain command line: run it without typer and exit (see
    `garrison.defender.argv`); anything else returns, for the typer command to read."""
    if args[:1] != ["app-embedded"]:
        return
    import os

    from garrison.defender.argv import parse_app_embedded, run_app_embedded

    parsed = parse_app_embedded(args[1:], os.environ)
    if parsed is None:
        return
    code = run_app_embedded(*parsed)
    # The defender has stopped, closed its logs and delivered its audits. The interpreter's own
    # teardown (every module and pydantic schema freed one by one, ~30-50 ms of CPU) would only
    # delay the app's exit status reaching whoever waits for it.
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(args: list[str], prog_name: str = "defender") -> None:
    """`defender ARGS` (or `garrison defender ARGS`) with only the defender's commands loaded; a plain
    `app-embedded` command line without typer at all."""
    run_plain_app_embedded(args)
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
