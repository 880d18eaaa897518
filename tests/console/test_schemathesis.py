"""Property-based fuzzing of the live console API from its own OpenAPI document: never a 5xx.

Runs against a real console (SQLite, and PostgreSQL when available) with bounded examples per operation, authenticated as an admin
via a Bearer token. `PUT /settings/alerts` is excluded: fuzzed webhook/syslog targets would make
the console send traffic to arbitrary (non-loopback) addresses; it is covered by test_alerts.py.
The live audit stream never ends by design and is excluded too (tests/ui/test_live.py covers it).
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.fixtures.console import RunningConsole, fresh_pg_database

EXAMPLES = 15


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    drop = None
    db_url = None
    if request.param == "postgresql":
        base = os.environ.get("GARRISON_TEST_PG_URL")
        if not base:
            pytest.skip(
                "GARRISON_TEST_PG_URL is not set (scripts/test starts a PostgreSQL cluster and sets it)"
            )
        db_url, drop = fresh_pg_database(base)
    c = RunningConsole(tmp_path_factory.mktemp("console-fuzz"), db_url=db_url)
    try:
        c.start()
        c.create_user("fuzz-admin", "fuzz-admin-password", "admin")
        with c.api("fuzz-admin", "fuzz-admin-password") as api:
            token = api.post("/tokens", json={"name": "fuzz", "ttl_days": 1}).json()["token"]
        yield c, token
    finally:
        c.stop()
        if drop is not None:
            drop()


@pytest.fixture(scope="module")
def api_schema(fuzz_target):
    c, _ = fuzz_target
    spec = httpx.get(c.url + "/api/v1/openapi.json", verify=c.ssl_context()).json()
    schema = schemathesis.openapi.from_dict(spec)
    # The live SSE stream never ends by design (its bad input is tested in tests/ui/test_live.py).
    schema = schema.exclude(path="/api/v1/audits/runtime/app-embedded/stream")
    return schema.exclude(method="PUT", path="/api/v1/settings/alerts")


def test_no_server_errors(api_schema, fuzz_target):
    """Every operation of the live spec, `EXAMPLES` generated cases each (deterministic seed)."""
    c, token = fuzz_target
    headers = {"authorization": f"Bearer {token}"}
    failures: list[str] = []
    operations = [r.ok() for r in api_schema.get_all_operations()]
    assert len(operations) >= 25

    for op in operations:

        @given(case=op.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
        )
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(base_url=c.url, headers=headers, verify=str(c.ca_path), timeout=30)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}"
                )

        fuzz()
    assert not failures, "\n".join(failures[:20])
    # The console's own counters confirm the requests were made and none failed with a 5xx.
    metrics = httpx.get(c.url + "/metrics", verify=c.ssl_context()).text
    counts = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("garrison_http_requests_total{")
    }
    assert counts.get("5xx", 0) == 0
    assert counts.get("2xx", 0) + counts.get("4xx", 0) >= 5 * len(operations), counts
