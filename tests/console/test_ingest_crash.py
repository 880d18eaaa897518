"""Killing the console (SIGKILL) in the middle of an ingest burst loses nothing and stores nothing
twice: acks are sent only after the (group) commit, and what was not acked is re-sent from the
defenders' spools to the restarted console on the same ports (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import pytest

from garrison.channel.bundle import decode_bundle
from garrison.channel.simulate import SimulatedFleet
from garrison.policy.audit import AuditEvent
from tests.fixtures.console import RunningConsole, fresh_pg_database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DEFENDERS, PER = 20, 1000


def _events(prefix: str) -> list[AuditEvent]:
    return [
        AuditEvent(id=f"{prefix}-{i:06d}", type="network", effect="alert", rule="crash", dest_port=443)
        for i in range(PER)
    ]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_console_killed_mid_ingest_loses_and_duplicates_nothing(db: str, tmp_path: Path) -> None:
    drop = None
    db_url = None
    if db == "postgresql":
        base = os.environ.get("GARRISON_TEST_PG_URL")
        if not base:
            pytest.skip(
                "GARRISON_TEST_PG_URL is not set (scripts/test starts a PostgreSQL cluster and sets it)"
            )
        db_url, drop = fresh_pg_database(base)
    console = RunningConsole(tmp_path / "console", db_url=db_url).start()
    try:
        kills = asyncio.run(_scenario(console))
        assert kills >= 1
        with console.api() as api:
            r = api.get("/audits/runtime/app-embedded", params={"rule": "crash", "limit": 1})
            assert int(r.headers["Total-Count"]) == DEFENDERS * PER  # nothing lost, nothing twice
    finally:
        console.stop()
        if drop is not None:
            drop()


async def _scenario(console: RunningConsole) -> int:
    bundle = decode_bundle(await asyncio.to_thread(console.install_bundle))
    with tempfile.TemporaryDirectory() as d:
        fleet = SimulatedFleet(bundle, Path(d), DEFENDERS, prefix="crash", batch_size=100, window=4)
        await fleet.start()
        for c in fleet.clients:
            c.backoff_base, c.backoff_max = 0.05, 0.5
        total = DEFENDERS * PER
        for i, c in enumerate(fleet.clients):
            c.spool.append(_events(f"crash-{i}"))
        for c in fleet.clients:
            c.wake()
        kills = 0
        deadline = time.monotonic() + 120
        while fleet.pending() == total and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if 0 < fleet.pending() < total:  # mid-ingest: some batches acked, others in flight
            assert console.proc is not None
            console.proc.kill()
            await asyncio.to_thread(console.proc.wait, 30)
            kills += 1
            console.args = ["--port", str(console.port), "--defender-port", str(console.defender_port)]
            await asyncio.to_thread(console.start)
        await fleet.wait_delivered(timeout=300)
        await fleet.wait_connected(60)

        def connected() -> int:
            with console.api() as api:
                return int(api.get("/defenders/summary").json()["connected"])

        # connection state is right after the crash: everyone reconnected and is marked so
        assert await asyncio.to_thread(connected) == DEFENDERS
        await fleet.stop()
    return kills
