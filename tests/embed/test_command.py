"""Start-command wrapping: exact round trip, idempotence, shell syntax kept intact."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from garrison.embed import command as cmd


@pytest.mark.parametrize(
    ("original", "wrapped"),
    [
        ("python3 app.py", ".garrison/defender app-embedded python3 app.py"),
        ("bundle exec rackup -p $PORT", ".garrison/defender app-embedded bundle exec rackup -p $PORT"),
        ("cd web && node server.js", ".garrison/defender app-embedded bash -c 'cd web && node server.js'"),
        ("bash -c true", ".garrison/defender app-embedded bash -c 'bash -c true'"),
        ("echo 'a b' | cat", ".garrison/defender app-embedded bash -c 'echo '\"'\"'a b'\"'\"' | cat'"),
    ],
)
def test_wrap_and_unwrap(original: str, wrapped: str) -> None:
    assert cmd.wrap(original) == wrapped
    assert cmd.unwrap(wrapped) == original
    assert cmd.wrap(wrapped) == wrapped  # embedding twice does not wrap twice


def test_unwrap_refuses_plain_command() -> None:
    with pytest.raises(ValueError, match="not wrapped"):
        cmd.unwrap("python3 app.py")


def test_empty_command_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        cmd.wrap("  ")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1))
def test_round_trip_is_exact(original: str) -> None:
    original = original.strip()
    if not original or cmd.is_wrapped(original):
        return
    assert cmd.unwrap(cmd.wrap(original)) == original


def test_wrapped_command_runs_same_argv_under_bash(tmp_path: Path) -> None:
    """What the launcher's `bash -c` hands the defender: with a pass-through defender, the same output."""
    d = tmp_path / ".garrison"
    d.mkdir()
    (d / "defender").write_text('#!/bin/sh\nshift\nexec "$@"\n')
    (d / "defender").chmod(0o755)
    for original in ("echo $X one", 'echo a && echo "$X" | tr a-z A-Z', "printf '%s\\n' 'x  y'"):
        env = {"X": "val", "PATH": "/usr/bin:/bin"}
        want = subprocess.run(["bash", "-c", original], env=env, capture_output=True, text=True, cwd=tmp_path)
        got = subprocess.run(
            ["bash", "-c", cmd.wrap(original)], env=env, capture_output=True, text=True, cwd=tmp_path
        )
        assert got.stdout == want.stdout, original
