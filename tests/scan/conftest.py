"""Scanner fixtures: the shared real advisory data imported once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.scan.vulndb.index import VulnIndex
from garrison.scan.vulndb.load import LoadErrors, iter_advisories
from tests.scan.helpers import VULNDB


@pytest.fixture(scope="session")
def real_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not VULNDB.is_dir():
        pytest.skip(f"shared advisory data not found at {VULNDB}")
    db = tmp_path_factory.mktemp("vulndb")
    errors = LoadErrors()
    with VulnIndex(db, create=True) as ix:
        ix.import_advisories(iter_advisories([VULNDB], errors), str(VULNDB))
    assert errors.errors == []
    return db
