"""Benchmark: how fast a policy change reaches defenders connected to *another* console replica.

Two `garrison console` replicas on one PostgreSQL database; N simulated defenders (real TLS
WebSocket clients, garrison.channel.simulate) connected half to replica A, half to replica B. Each
round PUTs a new runtime policy, alternately on A and on B, and records when every defender got the
revision, from the moment the PUT was sent. The baseline, measured in the same rounds, is the
delivery to the defenders on the replica that took the PUT (direct push); the other half measures
PostgreSQL NOTIFY → the other replica's listener → its push.

    bash -c 'source scripts/pg-test-server; .venv/bin/python bench/console_replicas.py --defenders 200 --rounds 20'
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from garrison.channel.bundle import decode_bundle
from garrison.channel.simulate import SimulatedFleet
from tests.fixtures.console import RunningConsole, fresh_pg_database


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _row(name: str, ms: list[float]) -> str:
    return (
        f"{name:<34} n={len(ms):>6}  p50 {_pct(ms, 0.5):7.1f} ms  p90 {_pct(ms, 0.9):7.1f} ms  "
        f"p99 {_pct(ms, 0.99):7.1f} ms  max {max(ms):7.1f} ms  mean {statistics.fmean(ms):7.1f} ms"
    )


async def bench(a: RunningConsole, b: RunningConsole, n: int, rounds: int, base: Path) -> None:
    fleets = {}
    for name, console in (("a", a), ("b", b)):
        bundle = decode_bundle(a.install_bundle(consoleaddr=f"127.0.0.1:{console.defender_port}"))
        fleets[name] = SimulatedFleet(bundle, base / name, n // 2, prefix=f"bench-{name}")
        await fleets[name].start(timeout=300)
    same: list[float] = []
    other: list[float] = []
    clients = {name: httpx.AsyncClient(base_url=c.url + "/api/v1", verify=c.ssl_context(),
                                       auth=(a.admin_user, a.admin_password), timeout=60)
               for name, c in (("a", a), ("b", b))}  # fmt: skip
    try:
        for r in range(-2, rounds):  # two warm-up rounds (first sign-in, first push) not recorded
            taker = "a" if r % 2 == 0 else "b"
            body = {"rules": [{"name": f"round-{r}", "processes": {"effect": "alert", "deny": [f"/bin/x{r}"]}}]}
            sent = time.perf_counter()
            resp = await clients[taker].put("/policies/runtime/app-embedded", json=body)
            resp.raise_for_status()
            revision = resp.json()["revision"]
            for name, fleet in fleets.items():
                times = await fleet.wait_revision(revision, timeout=120)
                if r < 0:
                    continue
                (same if name == taker else other).extend((t - sent) * 1000 for t in times)
    finally:
        for c in clients.values():
            await c.aclose()
        for fleet in fleets.values():
            await fleet.stop()
    print(_row("same replica (direct push)", same))
    print(_row("other replica (NOTIFY + push)", other))
    print(f"other/same p99 ratio: {_pct(other, 0.99) / _pct(same, 0.99):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--defenders", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    base_url = os.environ.get("GARRISON_TEST_PG_URL")
    if not base_url:
        sys.exit("set GARRISON_TEST_PG_URL (source scripts/pg-test-server)")
    print(f"load average before: {os.getloadavg()}")
    db_url, drop = fresh_pg_database(base_url)
    with tempfile.TemporaryDirectory() as d:
        a = RunningConsole(Path(d) / "a", db_url=db_url).start()
        b = None
        try:
            ca = {k: (a.data_dir / f).read_text() for k, f in
                  (("GARRISON_CONSOLE_CA_CERT", "ca.pem"), ("GARRISON_CONSOLE_CA_KEY", "ca-key.pem"))}  # fmt: skip
            b = RunningConsole(Path(d) / "b", db_url=db_url, env=ca).start()
            asyncio.run(bench(a, b, args.defenders, args.rounds, Path(d)))
        finally:
            a.stop()
            if b is not None:
                b.stop()
            drop()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
