"""Fixtures for the embed tests: the standalone defender build (once per session, cached on disk)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARBALL = REPO / "dist" / "garrison_defender_app_embedded.tar.gz"


@pytest.fixture(scope="session")
def defender_tarball() -> Path:
    """scripts/build-defender output; a no-op when the frozen sources did not change."""
    r = subprocess.run(["bash", str(REPO / "scripts" / "build-defender")], capture_output=True, text=True)
    assert r.returncode == 0, f"scripts/build-defender failed:\n{r.stdout}\n{r.stderr}"
    assert TARBALL.is_file()
    return TARBALL


@pytest.fixture
def fake_defender(tmp_path: Path) -> Path:
    """A small defender directory for tests about droplet layout, not about the defender itself."""
    d = tmp_path / "fake-defender"
    d.mkdir()
    exe = d / "defender"
    exe.write_text('#!/bin/sh\n[ "$1" = app-embedded ] && shift\nexec "$@"\n')
    exe.chmod(0o755)
    (d / "defender_lib").mkdir()
    (d / "defender_lib" / "README").write_text("support files\n")
    return d
