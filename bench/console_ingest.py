"""Benchmark: runtime events ingested per second by a real console, SQLite and PostgreSQL.

N simulated defenders (garrison.channel.simulate, real TLS WebSocket clients with their own
certificates) each deliver M events in batches to a `garrison console` subprocess; the clock runs
from the first submit until every batch is acknowledged (i.e. stored). The baseline, measured in the
same run, is the store alone: EventStore.insert_batch in-process with the same batch size, no
network, no channel. Prints events/s for both and the ratio.

    .venv/bin/python bench/console_ingest.py --defenders 10 --events 20000 [--db sqlite|postgresql|both]

PostgreSQL uses $GARRISON_TEST_PG_URL (e.g. `source scripts/pg-test-server` first); a fresh database
is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from garrison.channel.bundle import decode_bundle
from garrison.channel.simulate import SimulatedFleet
from garrison.console.store.open import Store
from garrison.policy.audit import AuditEvent
from tests.fixtures.console import RunningConsole, fresh_pg_database


def make_events(n: int, app: str) -> list[AuditEvent]:
    t = time.time()
    return [
        AuditEvent(
            id=uuid.uuid4().hex,
            time=t + i * 1e-3,
            type="network",
            effect="alert",
            severity="medium",
            app_name=app,
            rule="egress",
            control="outbound",
            dest_ip="203.0.113.7",
            dest_port=4444,
            protocol="tcp",
            message="outbound connection to a denied address",
        )
        for i in range(n)
    ]


def store_baseline(db_url: str | None, total: int, batch: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        store = Store.open(db_url, Path(d))
        rows = make_events(total, "baseline")
        start = time.perf_counter()
        for i in range(0, total, batch):
            store.events.insert_batch(rows[i : i + batch], "bench")
        elapsed = time.perf_counter() - start
        store.engine.dispose()
    return total / elapsed


async def run_fleet(console: RunningConsole, n: int, per: int, batch: int) -> float:
    bundle = decode_bundle(console.install_bundle())
    with tempfile.TemporaryDirectory() as d:
        fleet = SimulatedFleet(bundle, Path(d), n, batch_size=batch, window=4)
        await fleet.start()
        events = [make_events(per, f"bench-{i}") for i in range(n)]
        start = time.perf_counter()
        for i in range(n):
            fleet.submit(i, events[i])
        await fleet.wait_delivered(timeout=600)
        elapsed = time.perf_counter() - start
        await fleet.stop()
    with console.api() as c:
        stored = sum(
            int(
                c.get("/audits/runtime/app-embedded", params={"app": f"bench-{i}", "limit": 1}).headers[
                    "Total-Count"
                ]
            )
            for i in range(n)
        )
    assert stored == n * per, f"stored {stored} of {n * per}"
    return n * per / elapsed


def bench(db: str, n: int, per: int, batch: int) -> None:
    drop = None
    db_url = None
    if db == "postgresql":
        base = os.environ.get("GARRISON_TEST_PG_URL")
        if not base:
            print("postgresql: skipped (GARRISON_TEST_PG_URL is not set; source scripts/pg-test-server)")
            return
        db_url, drop = fresh_pg_database(base)
    try:
        baseline = store_baseline(db_url, n * per, batch)
        with tempfile.TemporaryDirectory() as d:
            console = RunningConsole(Path(d) / "console", db_url=db_url).start()
            try:
                rate = asyncio.run(run_fleet(console, n, per, batch))
            finally:
                console.stop()
    finally:
        if drop is not None:
            drop()
    print(
        f"{db:10s} {n} defenders x {per} events (batch {batch}): console {rate:,.0f} events/s; "
        f"store alone {baseline:,.0f} events/s; ratio {rate / baseline:.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--defenders", type=int, default=10)
    ap.add_argument("--events", type=int, default=20_000, help="events per defender")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    args = ap.parse_args()
    for db in ("sqlite", "postgresql") if args.db == "both" else (args.db,):
        bench(db, args.defenders, args.events, args.batch)


if __name__ == "__main__":
    main()
