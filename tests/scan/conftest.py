"""Scanner fixtures: an advisory database built from the real-format fixtures in `advisories.py`
(always available), and the whole shared tree for the explicitly whole-tree checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.scan.vulndb.index import VulnIndex
from garrison.scan.vulndb.load import LoadErrors, iter_advisories
from tests.scan.advisories import shared_or_skip, write_advisory_tree


@pytest.fixture(scope="session")
def advisory_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_advisory_tree(tmp_path_factory.mktemp("advisories"))


@pytest.fixture(scope="session")
def advisory_db(advisory_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("vulndb")
    errors = LoadErrors()
    with VulnIndex(db, create=True) as ix:
        ix.import_advisories(iter_advisories([advisory_tree], errors), str(advisory_tree))
    assert errors.errors == []
    return db


@pytest.fixture(scope="session")
def shared_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Whole-tree check only: the shared data imported once (skips where ../shared is absent)."""
    vulndb = shared_or_skip()
    db = tmp_path_factory.mktemp("shared-vulndb")
    errors = LoadErrors()
    with VulnIndex(db, create=True) as ix:
        ix.import_advisories(iter_advisories([vulndb], errors), str(vulndb))
    assert errors.errors == []
    return db
