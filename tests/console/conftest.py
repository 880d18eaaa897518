"""`any_console`: the same tests against a console on SQLite and one on PostgreSQL; `store`: the same
for the store without a server (a fresh PostgreSQL database per test)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from garrison.console.store.open import Store
from tests.fixtures.console import fresh_pg_database


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def any_console(request: pytest.FixtureRequest):
    return request.getfixturevalue("console" if request.param == "sqlite" else "console_pg")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    drop = None
    url = None
    if request.param == "postgresql":
        base = os.environ.get("GARRISON_TEST_PG_URL")
        if not base:
            pytest.skip(
                "GARRISON_TEST_PG_URL is not set (scripts/test starts a PostgreSQL cluster and sets it)"
            )
        url, drop = fresh_pg_database(base)
    s = Store.open(url, tmp_path)
    try:
        yield s
    finally:
        s.engine.dispose()
        if drop is not None:
            drop()
