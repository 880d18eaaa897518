"""The `defender` executable: `defender app-embedded <prog> <args>` == `garrison defender app-embedded ...`.

CF manifests use `command: defender app-embedded <prog> ...`, so this name must exist on its own.
"""

from __future__ import annotations

import sys


def main() -> None:
    from garrison.cli.main import app

    app(args=["defender", *sys.argv[1:]], prog_name="defender")


if __name__ == "__main__":
    main()
