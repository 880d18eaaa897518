"""`defender app-embedded [OPTIONS] PROGRAM ARGS...` read without typer.

This command runs in front of every protected app instance, so its start-up is added to the app's.
Building the typer/click command tree costs more than the rest of the defender's start, so the plain
command lines a manifest uses are read here; anything else (help, an unknown option, a bad value, no
program) returns None and goes to the typer command, which then says what is wrong. Both read the
same options and environment variables (`tests/defender/test_argv.py` checks the two agree).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from garrison.defender.launch import Options

POLICY_ENV = "DEFENDER_POLICY_FILE"
FAIL_OPEN_ENV = "DEFENDER_FAIL_OPEN"
CONNECT_TIMEOUT_ENV = "DEFENDER_CONNECT_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT = 10.0

_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"", "0", "false", "f", "no", "n", "off"})


def _flag_from_env(value: str | None) -> bool | None:
    """click's reading of a boolean from the environment; None for a value it would refuse."""
    v = (value or "").strip().lower()
    return True if v in _TRUE else False if v in _FALSE else None


def _float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def parse_app_embedded(args: list[str], env: Mapping[str, str]) -> tuple[list[str], Options] | None:
    """(program, options) for `args` (what follows `app-embedded`), or None when typer must read them."""
    policy: str | None = None
    fail_open: bool | None = None
    timeout: float | None = None
    quiet = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            break
        name, eq, inline = arg.partition("=")
        if name in ("--policy", "--connect-timeout"):
            if eq:
                value = inline
            elif i + 1 < len(args):
                i += 1
                value = args[i]
            else:
                return None
            if name == "--policy":
                policy = value
            elif (timeout := _float(value)) is None:
                return None
        elif arg == "--fail-open":
            fail_open = True
        elif arg in ("-q", "--quiet"):
            quiet = True
        else:
            return None
        i += 1
    program = args[i + 1 :] if i < len(args) and args[i] == "--" else args[i:]
    if not program:
        return None
    if policy is None:
        policy = env.get(POLICY_ENV) or None
    if fail_open is None and (fail_open := _flag_from_env(env.get(FAIL_OPEN_ENV))) is None:
        return None
    if timeout is None:
        raw = env.get(CONNECT_TIMEOUT_ENV) or ""
        timeout = _float(raw) if raw else DEFAULT_CONNECT_TIMEOUT
        if timeout is None:
            return None
    from garrison.defender.launch import Options

    return program, Options(policy_file=policy, fail_open=fail_open, connect_timeout=timeout, quiet=quiet)


def run_app_embedded(program: list[str], opts: Options) -> int:
    """The command itself, reached from the typer command or from `parse_app_embedded`."""
    from garrison.defender.launch import main

    return main(program, opts, dict(os.environ))
