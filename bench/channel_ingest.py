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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.channel_common import ConsoleProcess, load_note, raise_fd_limit, run
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


async def one_run(db: str | None, label: str, n_def: int, n_events: int, batch: int, window: int) -> None:
    console = ConsoleProcess(db)
    try:
        with tempfile.TemporaryDirectory(prefix="garrison-fleet-") as tmp:
            fleet = SimulatedFleet(
                decode_bundle(console.bundle_text), Path(tmp), n_def, batch_size=batch, window=window
            )
            await fleet.start(timeout=300)
            per = n_events // n_def
            for i, c in enumerate(fleet.clients):
                c.spool.append(make_events(f"d{i}", per))  # spooled, not yet sent
            total = per * n_def
            t0 = time.perf_counter()
            for c in fleet.clients:
                c.wake()
            await fleet.wait_delivered(timeout=1800)
            dt = time.perf_counter() - t0
            stored = int(await asyncio.to_thread(console.command, "count"))
            # send everything again: the store must ignore all duplicates
            for i, c in enumerate(fleet.clients):
                c.spool.append(make_events(f"d{i}", per)[:100])
                c.wake()
            await fleet.wait_delivered(timeout=300)
            again = int(await asyncio.to_thread(console.command, "count"))
            await fleet.stop()
        ok = "ok" if stored == total == again else f"MISMATCH stored={stored} after-dups={again}"
        print(
            f"{label:10s} defenders={n_def:4d} batch={batch:5d} window={window}  "
            f"{total} events in {dt:6.2f} s = {total / dt:9.0f} events/s   stored once: {ok}"
        )
    finally:
        console.close()


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    stores: list[tuple[str, str | None]] = [("sqlite", None)]
    pg = args.pg or os.environ.get("GARRISON_TEST_PG_URL")
    if pg:
        stores.append(("postgresql", pg))
    else:
        print("PostgreSQL: skipped (no --pg and no GARRISON_TEST_PG_URL)")
    for label, db in stores:
        for n_def in args.defenders:
            for batch in args.batch:
                await one_run(db, label, n_def, args.events, batch, args.window)
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
