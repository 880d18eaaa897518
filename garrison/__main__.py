"""`python -m garrison` == `garrison` (used where the console script is not on PATH, e.g. the demo)."""

from garrison.cli.entry import main

main()
