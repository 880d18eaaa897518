"""The `defender` executable: `defender app-embedded <prog> <args>` == `garrison defender app-embedded ...`.

CF manifests use `command: defender app-embedded <prog> ...`, so this name must exist on its own. It loads only
the defender's CLI (not every component's), because import time is added to the app's start-up.
"""

from __future__ import annotations

import sys


def main() -> None:
    import typer

    from garrison.defender import cli as defender_cli

    app = typer.Typer(name="defender", no_args_is_help=True, pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """Garrison app-embedded defender."""

    defender_cli.register(app)
    app(args=["defender", *sys.argv[1:]], prog_name="defender")


if __name__ == "__main__":
    main()
