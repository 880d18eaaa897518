from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.defender.helpers import Sandbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # not tmp_path: pytest's base dir is private to root, and the app runs as an unprivileged user
    root = Path(tempfile.mkdtemp(prefix="garrison-defender-"))
    try:
        yield Sandbox(root).setup()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["native", "garden"])
def mode(request: pytest.FixtureRequest) -> str:
    """Every control is exercised with the full kernel and under a Garden-like seccomp profile."""
    return str(request.param)


@pytest.fixture(params=["root", "user", "garden"])
def mode3(request: pytest.FixtureRequest) -> str:
    """The three ways a defender runs: as root natively, as an unprivileged user the suite created,
    and as that user under a Garden-like seccomp profile (no Landlock, pidfd, process_vm_readv)."""
    return str(request.param)
