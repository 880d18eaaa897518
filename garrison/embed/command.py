"""Wrapping a CF start command with the defender, and unwrapping it again exactly.

CF's launcher runs the start command with `bash -c`, so a simple command (words and $VARS) can be
prefixed: the launcher's shell expands variables before the defender sees its argv. A command with
shell syntax (`&&`, pipes, quotes, redirections) is handed to `bash -c` as one quoted argument so the
defender supervises the whole pipeline. `unwrap(wrap(c)) == c` for every c, which is what `--undo`
(the `cf push -c null` path) relies on.
"""

from __future__ import annotations

import re
import shlex

DEFAULT_DROPLET_PATH = ".garrison/defender"
"""Where `garrison embed` puts the defender inside a droplet's app/ dir (the app's working directory)."""

_SIMPLE = re.compile(r"[A-Za-z0-9_./:=@%+,${}-]+( +[A-Za-z0-9_./:=@%+,${}-]+)*")
_WRAPPED = re.compile(r"^(?P<path>\S*defender) app-embedded (?P<rest>.+)$", re.S)


def is_simple(command: str) -> bool:
    """True if prefixing is exactly equivalent: plain words and variables, no shell syntax."""
    return bool(_SIMPLE.fullmatch(command)) and "$(" not in command and not command.startswith("bash -c")


def is_wrapped(command: str) -> bool:
    return bool(_WRAPPED.match(command))


def wrap(command: str, defender_path: str = DEFAULT_DROPLET_PATH) -> str:
    """The start command that runs `command` under the defender (idempotent)."""
    command = command.strip()
    if not command:
        raise ValueError("empty start command: nothing to wrap")
    if is_wrapped(command):
        return command
    if is_simple(command):
        return f"{defender_path} app-embedded {command}"
    return f"{defender_path} app-embedded bash -c {shlex.quote(command)}"


def unwrap(command: str) -> str:
    """The original start command of a wrapped one; raises ValueError if it is not wrapped."""
    m = _WRAPPED.match(command.strip())
    if not m:
        raise ValueError(f"start command is not wrapped by the defender: {command!r}")
    rest = m.group("rest")
    if rest.startswith("bash -c "):
        try:
            parts = shlex.split(rest)
        except ValueError:
            return rest
        if len(parts) == 3 and rest == f"bash -c {shlex.quote(parts[2])}":
            return parts[2]
    return rest
