"""The plain reading of `defender app-embedded ...` (no typer on the start path) agrees with the
typer command on every command line it accepts, and leaves every other one to typer."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from garrison.defender import cli
from garrison.defender.argv import parse_app_embedded
from garrison.defender.launch import Options


def _typer_reads(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for k in ("DEFENDER_POLICY_FILE", "DEFENDER_FAIL_OPEN", "DEFENDER_CONNECT_TIMEOUT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    seen: list[tuple[list[str], Options]] = []

    def record(program: list[str], opts: Options) -> int:
        seen.append((program, opts))
        return 0

    try:
        typer.main.get_group(cli.group(record))(
            args=["app-embedded", *args], prog_name="defender", standalone_mode=False
        )
    except Exception as exc:  # typer refused the command line
        return type(exc).__name__
    return seen[0] if seen else None


CASES: list[tuple[list[str], dict[str, str]]] = [
    (["app"], {}),
    (["-q", "--policy", "p.json", "app", "-q", "--policy", "x"], {}),
    (["--policy=p.json", "--quiet", "python", "app.py", "--port", "8080"], {}),
    (["--fail-open", "--connect-timeout", "2.5", "app"], {}),
    (["--connect-timeout=1e1", "app"], {}),
    (["-q", "--", "app", "--help"], {}),
    (["--", "-app"], {}),
    (["-", "x"], {}),
    (["--policy", "", "app"], {}),
    (["app"], {"DEFENDER_POLICY_FILE": "/etc/p.yaml", "DEFENDER_FAIL_OPEN": "yes"}),
    (["app"], {"DEFENDER_POLICY_FILE": "", "DEFENDER_FAIL_OPEN": " Off ", "DEFENDER_CONNECT_TIMEOUT": "3"}),
    (["app"], {"DEFENDER_FAIL_OPEN": "1", "DEFENDER_CONNECT_TIMEOUT": ""}),
    (["--policy", "cli.json", "--connect-timeout", "4", "app"], {"DEFENDER_POLICY_FILE": "env.json",
                                                                  "DEFENDER_CONNECT_TIMEOUT": "9"}),
    (["--fail-open", "app"], {"DEFENDER_FAIL_OPEN": "garbage"}),
]
# typer's to read: help, unknown options, bad values, no program
TO_TYPER: list[tuple[list[str], dict[str, str]]] = [
    (["--help"], {}),
    (["-qq", "app"], {}),
    (["--quiet=1", "app"], {}),
    (["--unknown", "app"], {}),
    (["--connect-timeout", "soon", "app"], {}),
    (["--policy"], {}),
    ([], {}),
    (["-q"], {}),
    (["app"], {"DEFENDER_FAIL_OPEN": "garbage"}),
    (["app"], {"DEFENDER_CONNECT_TIMEOUT": "soon"}),
]


@pytest.mark.parametrize(("args", "env"), CASES)
def test_plain_reading_agrees_with_typer(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    fast = parse_app_embedded(args, env)
    assert fast is not None
    assert fast == _typer_reads(args, env, monkeypatch)


@pytest.mark.parametrize(("args", "env"), TO_TYPER)
def test_anything_else_is_left_to_typer(args: list[str], env: dict[str, str]) -> None:
    assert parse_app_embedded(args, env) is None
