"""Policy push latency to N connected simulated defenders (default 500), real console store.

Time = from the moment the bench asks the console to store a new policy revision (the PUT path:
store + notify) until each defender's on_policy callback ran. Console and defenders run in separate
processes on the same machine (2 cores here), so the figure includes both sides' CPU.
Usage: .venv/bin/python bench/channel_push.py [--defenders 500] [--pushes 20] [--db URL]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.channel_common import ConsoleProcess, load_note, percentile, raise_fd_limit, run
from garrison.channel.bundle import decode_bundle
from garrison.channel.simulate import SimulatedFleet


def parse_cost_ms() -> float:
    from bench.channel_common import bench_policy
    from garrison.channel import protocol as p

    text = p.dump(p.PolicySnapshot(revision=1, policy=bench_policy(1)))
    t = time.perf_counter()
    for _ in range(200):
        p.parse(text)
    return (time.perf_counter() - t) / 200 * 1000


async def main(n: int, pushes: int, db: str | None, plain: bool = False, shared_parse: bool = True) -> None:
    raise_fd_limit()
    console = ConsoleProcess(db, plain_asyncio=plain)
    print(f"event loop: {'asyncio' if plain else 'uvloop'} in both processes; store: {db or 'sqlite'}")
    try:
        with tempfile.TemporaryDirectory(prefix="garrison-fleet-") as tmp:
            fleet = SimulatedFleet(
                decode_bundle(console.bundle_text), Path(tmp), n, share_policy_parsing=shared_parse
            )
            t = time.perf_counter()
            await fleet.start(timeout=600)
            print(f"{n} defenders enrolled and connected in {time.perf_counter() - t:.1f} s")
            lat: list[float] = []
            worst: list[float] = []
            for _ in range(pushes):
                t0 = time.perf_counter()
                rev = int(await asyncio.to_thread(console.command, "push"))
                times = await fleet.wait_revision(rev, timeout=60)
                ms = [(x - t0) * 1000 for x in times]
                lat += ms
                worst.append(max(ms))
                await asyncio.sleep(0.2)
            print(f"policy push to {n} defenders, {pushes} pushes ({len(lat)} deliveries):")
            print(
                f"  p50 {percentile(lat, 50):.1f} ms   p90 {percentile(lat, 90):.1f} ms   "
                f"p99 {percentile(lat, 99):.1f} ms   max {max(lat):.1f} ms"
            )
            print(
                f"  time until the last defender had it: median {percentile(worst, 50):.1f} ms, "
                f"worst {max(worst):.1f} ms   (goal: p99 < 1000 ms)"
            )
            print("  " + load_note())
            how = (
                "the simulated fleet validates each distinct snapshot once for all"
                if shared_parse
                else f"here all {n} validations ran one after another in the one fleet process"
            )
            print(
                f"  each defender validates the policy itself: {parse_cost_ms():.2f} ms per snapshot ({how})"
            )
            await fleet.stop()
    finally:
        console.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--defenders", type=int, default=500)
    ap.add_argument("--pushes", type=int, default=20)
    ap.add_argument("--db", default=None, help="console store URL (default: SQLite in a temp dir)")
    ap.add_argument("--asyncio", action="store_true", help="plain asyncio loops instead of uvloop")
    ap.add_argument(
        "--no-shared-parse", action="store_true", help="every simulated defender validates its own copy"
    )
    a = ap.parse_args()
    run(main(a.defenders, a.pushes, a.db, a.asyncio, not a.no_shared_parse), plain=a.asyncio)
