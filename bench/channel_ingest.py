"""Events ingested per second through the channel into the real console store (SQLite, PostgreSQL).

N simulated defenders each hold a share of E events in their spool; the clock runs from "send" until
every batch is acked (i.e. committed by the store), for several batch sizes. The console runs in its
own process. PostgreSQL is measured when --pg URL or GARRISON_TEST_PG_URL is given
(`bash -c 'source scripts/pg-test-server; .venv/bin/python bench/channel_ingest.py'`).
Usage: .venv/bin/python bench/channel_ingest.py [--defenders 10] [--events 100000] [--batch 100,1000]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.channel_common import ConsoleProcess, load_note, open_console_backend, raise_fd_limit, run
from garrison.channel.bundle import decode_bundle
from garrison.channel.simulate import SimulatedFleet
from garrison.policy.audit import AuditEvent


def make_events(prefix: str, n: int) -> list[AuditEvent]:
    return [
        AuditEvent(
            id=f"{prefix}-{i:09d}",
            type="process" if i % 2 else "network",
            effect="alert",
            severity="medium",
            rule="default",
            control="processes.deny" if i % 2 else "network.outbound",
            pid=1000 + i % 500,
            ppid=1,
            exe="/usr/bin/curl",
            argv=["curl", "-s", f"http://example.invalid/{i}"],
            cwd="/home/vcap/app",
            dest_ip="203.0.113.7",
            dest_port=443,
            message="outbound connection to a denied destination",
        )
        for i in range(n)
    ]


async def one_run(
    db: str | None, label: str, n_def: int, n_events: int, batch: int, window: int, discard: bool = False
) -> None:
    console = ConsoleProcess(db, discard=discard)
    try:
        with tempfile.TemporaryDirectory(prefix="garrison-fleet-") as tmp:
            fleet = SimulatedFleet(
                decode_bundle(console.bundle_text), Path(tmp), n_def, batch_size=batch, window=window
            )
            await fleet.start(timeout=300)
            run_id = uuid.uuid4().hex[:8]  # a PostgreSQL database may hold earlier runs' events
            per = n_events // n_def
            for i, c in enumerate(fleet.clients):
                c.spool.append(make_events(f"{run_id}-d{i}", per))  # spooled, not yet sent
            total = per * n_def
            t0 = time.perf_counter()
            for c in fleet.clients:
                c.wake()
            await fleet.wait_delivered(timeout=1800)
            dt = time.perf_counter() - t0
            stored = int(await asyncio.to_thread(console.command, f"count {run_id}-"))
            # send everything again: the store must ignore all duplicates
            for i, c in enumerate(fleet.clients):
                c.spool.append(make_events(f"{run_id}-d{i}", per)[:100])
                c.wake()
            await fleet.wait_delivered(timeout=300)
            again = int(await asyncio.to_thread(console.command, f"count {run_id}-"))
            await fleet.stop()
        if discard:
            ok = "n/a (discarded)"
        else:
            ok = "ok" if stored == total == again else f"MISMATCH stored={stored} after-dups={again}"
        print(
            f"{label:10s} defenders={n_def:4d} batch={batch:5d} window={window}  "
            f"{total} events in {dt:6.2f} s = {total / dt:9.0f} events/s   stored once: {ok}"
        )
    finally:
        console.close()


async def store_only(db: str | None, label: str, n_events: int, batch: int) -> None:
    """The console backend's store_events alone, no channel: the ceiling the store sets."""
    with tempfile.TemporaryDirectory(prefix="garrison-store-") as tmp:
        store, _, backend = open_console_backend(Path(tmp), db)
        evs = make_events("s" + uuid.uuid4().hex[:8], n_events)  # fresh ids even in a reused database
        t0 = time.perf_counter()
        for i in range(0, n_events, batch):
            await backend.store_events("bench-defender", evs[i : i + batch])
        dt = time.perf_counter() - t0
        store.engine.dispose()
    print(
        f"{label:10s} store only (ConsoleChannelBackend.store_events, batch={batch}): {n_events / dt:9.0f} events/s"
    )


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    stores: list[tuple[str, str | None]] = [("sqlite", None)]
    pg = args.pg or os.environ.get("GARRISON_TEST_PG_URL")
    if pg:
        stores.append(("postgresql", pg))
    else:
        print("PostgreSQL: skipped (no --pg and no GARRISON_TEST_PG_URL)")
    for n_def in args.defenders:
        for batch in args.batch:
            await one_run(None, "channel", n_def, args.events, batch, args.window, discard=True)
    for label, db in stores:
        await store_only(db, label, min(args.events, 50_000), max(args.batch))
        for n_def in args.defenders:
            for batch in args.batch:
                await one_run(db, label, n_def, args.events, batch, args.window)
    print("'channel' rows: the console discards events after validating them (channel + TLS + protocol")
    print("only); 'store only': the console store without the channel; other rows: end to end.")
    print("goal: >= 20,000 events/s with batching " + load_note())


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--defenders", type=_ints, default=[10])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=_ints, default=[100, 1000])
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--pg", default=None)
    run(main(ap.parse_args()))
