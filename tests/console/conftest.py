"""`any_console`: the same tests against a console on SQLite and one on PostgreSQL."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def any_console(request: pytest.FixtureRequest):
    return request.getfixturevalue("console" if request.param == "sqlite" else "console_pg")
