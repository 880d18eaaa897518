"""One real `garrison console` with thousands of connected defenders: push latency, ingest, RSS.

The console runs as `python -m garrison console` (SQLite by default, `--db URL` for PostgreSQL), as an
operator runs it. The defenders are real channel clients (garrison.channel.simulate: own key,
certificate, TLS WebSocket, heartbeats every `--heartbeat` s) spread over several worker processes
(`--workers`, default one per 2,500 defenders) so the client side does not share the console's
interpreter. Every process raises its soft open-files limit to the hard one.

Steps, for each fleet size in `--defenders` (cumulative: 1000,5000,10000 adds defenders):
  1. enrol + connect the new defenders (time printed);
  2. `--pushes` policy PUTs through the HTTPS API; latency = from just before the PUT until each
     defender's on_policy callback ran (CLOCK_MONOTONIC is shared by the processes); p50/p90/p99/max;
  3. at the first size only (or `--ingest-at`): `--ingest-rounds` rounds in which every connected
     defender delivers `--events` events in total; events/s from "go" until every batch is acked
     (stored); the store must hold each event exactly once (counted through the API).
The console's RSS (VmRSS) is sampled every second throughout and summarised per step, ending with
an idle period (`--idle`) after the last ingest: is memory returned, does it plateau?

    .venv/bin/python bench/console_scale.py --defenders 1000,5000,10000
    .venv/bin/python bench/console_scale.py --defenders 1000 --ingest-rounds 5 --events 200000

The machine's load average is printed with every figure: on a shared 2-core box, the console, the
worker processes and everybody else's jobs compete for the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PER_WORKER = 2500


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def load_note() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}/{fifteen:.1f} on {os.cpu_count()} CPUs"


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


# -- worker process: a share of the fleet -----------------------------------------------------------
async def _worker(args: argparse.Namespace) -> None:
    from garrison.channel.bundle import decode_bundle
    from garrison.channel.simulate import SimulatedFleet

    raise_fd_limit()
    bundle = decode_bundle(Path(args.bundle_file).read_text())
    with tempfile.TemporaryDirectory(prefix=f"garrison-scale-{args.prefix}-") as tmp:
        fleet = SimulatedFleet(
            bundle, Path(tmp), args.n, prefix=args.prefix, heartbeat_interval=args.heartbeat,
            batch_size=args.batch,
        )  # fmt: skip
        t = time.perf_counter()
        await fleet.start(enrol_concurrency=8, timeout=3600)
        _reply({"ready": args.n, "seconds": time.perf_counter() - t})
        loop = asyncio.get_running_loop()
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                break
            if line[0] == "wait":
                times = await fleet.wait_revision(int(line[1]), timeout=600)
                _reply({"times": times})
            elif line[0] == "load":  # load PER_DEFENDER RULE
                per, rule = int(line[1]), line[2]
                for i, c in enumerate(fleet.clients):
                    c.spool.append(_events(f"{rule}-{args.prefix}-{i}", rule, per))
                _reply({"loaded": per * len(fleet.clients)})
            elif line[0] == "go":
                for c in fleet.clients:
                    c.wake()
                await fleet.wait_delivered(timeout=3600)
                _reply({"delivered": time.perf_counter()})
            elif line[0] == "status":
                _reply({"connected": sum(c.connected for c in fleet.clients)})
        await fleet.stop()


def _events(prefix: str, rule: str, n: int) -> list[Any]:
    from garrison.policy.audit import AuditEvent

    return [
        AuditEvent(
            id=f"{prefix}-{k:07d}",
            type="network",
            effect="alert",
            severity="medium",
            rule=rule,
            control="network.outbound",
            pid=1000 + k % 500,
            exe="/usr/bin/curl",
            argv=["curl", "-s", f"http://example.invalid/{k}"],
            dest_ip="203.0.113.7",
            dest_port=443,
            message="outbound connection to a denied destination",
        )
        for k in range(n)
    ]


def _reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Worker:
    def __init__(self, bundle_file: Path, n: int, prefix: str, heartbeat: float, batch: int) -> None:
        self.n = n
        self.prefix = prefix
        cmd = [sys.executable, __file__, "worker", "--bundle-file", str(bundle_file), "--n", str(n),
               "--prefix", prefix, "--heartbeat", str(heartbeat), "--batch", str(batch)]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.prefix} exited ({self.proc.poll()})")
        return dict(json.loads(line))

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError, OSError):
            self.send("quit")
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- console RSS ------------------------------------------------------------------------------------
class RssSampler(threading.Thread):
    """VmRSS of the console every second, tagged with the current step."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.step = "start"
        self.samples: list[tuple[float, str, int]] = []
        self._stop = threading.Event()

    def rss_mib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
        return 0

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), self.step, self.rss_mib()))

    def stop(self) -> None:
        self._stop.set()

    def summary(self) -> list[str]:
        out: list[str] = []
        steps: dict[str, list[int]] = {}
        for _, step, rss in self.samples:
            steps.setdefault(step, []).append(rss)
        for step, values in steps.items():
            out.append(
                f"  {step:34s} RSS MiB: first {values[0]:5d}  max {max(values):5d}  last {values[-1]:5d}"
            )
        return out


# -- driver -----------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, console: Any, tmp: Path) -> None:
        self.args = args
        self.console = console
        self.tmp = tmp
        self.workers: list[Worker] = []
        self.results: list[tuple[float, float]] = []
        """(events/s, console CPU µs per event) of each ingest round"""
        self.sampler = RssSampler(console.proc.pid)
        self.api = console.api()
        self.bundle_file = tmp / "bundle.txt"
        self.bundle_file.write_text(console.install_bundle())

    def connected(self) -> int:
        return sum(w.n for w in self.workers)

    def grow(self, target: int) -> None:
        need = target - self.connected()
        if need <= 0:
            return
        self.sampler.step = f"connect to {target}"
        cpu0, t0 = self.sampler.cpu_s(), time.perf_counter()
        per = self.args.per_worker
        new = []
        while need > 0:
            n = min(per, need)
            new.append(
                Worker(
                    self.bundle_file,
                    n,
                    f"w{len(self.workers) + len(new)}",
                    self.args.heartbeat,
                    self.args.batch,
                )
            )
            need -= n
        for w in new:
            w.read()
        self.workers += new
        dt = time.perf_counter() - t0
        print(
            f"{self.connected()} defenders connected (+{sum(w.n for w in new)} enrolled and connected in "
            f"{dt:.1f} s, console CPU {self.sampler.cpu_s() - cpu0:.1f} s; {len(self.workers)} worker processes; "
            f"{load_note()})",
            flush=True,
        )
        with self.console.api() as c:
            summary = c.get("/defenders/summary").json()
        print(f"  console says: {summary}", flush=True)

    def push(self, rounds: int) -> None:
        from bench.channel_common import bench_policy

        n = self.connected()
        self.sampler.step = f"push at {n}"
        lat: list[float] = []
        worst: list[float] = []
        cpu0 = self.sampler.cpu_s()
        loads = []
        for _ in range(rounds):
            body = bench_policy(int(time.time() * 1000) % 1_000_000).model_dump(mode="json")
            t0 = time.perf_counter()
            r = self.api.put("/policies/runtime/app-embedded", json=body)
            r.raise_for_status()
            rev = int(r.json()["revision"])
            for w in self.workers:
                w.send(f"wait {rev}")
            ms = [(t - t0) * 1000 for w in self.workers for t in w.read()["times"]]
            lat += ms
            worst.append(max(ms))
            loads.append(os.getloadavg()[0])
            time.sleep(self.args.push_gap)
        print(
            f"policy push to {n} defenders, {rounds} PUTs ({len(lat)} deliveries): p50 {percentile(lat, 50):.0f} ms  "
            f"p90 {percentile(lat, 90):.0f} ms  p99 {percentile(lat, 99):.0f} ms  max {max(lat):.0f} ms; "
            f"last defender: median {percentile(worst, 50):.0f} ms; console CPU {self.sampler.cpu_s() - cpu0:.1f} s "
            f"(load during pushes {min(loads):.1f}-{max(loads):.1f}; {load_note()})",
            flush=True,
        )

    def ingest(self, rnd: int) -> None:
        n = self.connected()
        per = max(1, self.args.events // n)
        rule = f"scale-r{rnd}-{os.getpid()}"
        self.sampler.step = f"ingest at {n} round {rnd}"
        for w in self.workers:
            w.send(f"load {per} {rule}")
        for w in self.workers:
            w.read()
        cpu0 = self.sampler.cpu_s()
        t0 = time.perf_counter()
        for w in self.workers:
            w.send("go")
        end = max(w.read()["delivered"] for w in self.workers)
        cpu = self.sampler.cpu_s() - cpu0  # before the count below (a table scan, not ingest)
        dt = end - t0
        total = per * n
        stored = int(
            self.api.get("/audits/runtime/app-embedded", params={"rule": rule, "limit": 1}).headers[
                "Total-Count"
            ]
        )
        ok = "exactly once" if stored == total else f"MISMATCH: {stored} stored"
        self.results.append((total / dt, cpu / total * 1e6))
        print(
            f"ingest round {rnd}: {n} defenders x {per} events = {total} in {dt:.2f} s = {total / dt:,.0f} events/s "
            f"(batches <= {self.args.batch}); stored {ok}; console CPU {cpu:.1f} s = {cpu / total * 1e6:.1f} µs/event; "
            f"RSS {self.sampler.rss_mib()} MiB ({load_note()})",
            flush=True,
        )

    def idle(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self.sampler.step = f"idle {seconds:.0f} s at {self.connected()}"
        time.sleep(seconds)
        print(f"after {seconds:.0f} s idle: RSS {self.sampler.rss_mib()} MiB ({load_note()})", flush=True)

    def run(self) -> None:
        self.sampler.start()
        ingest_at = self.args.ingest_at or self.args.defenders[0]
        try:
            for target in self.args.defenders:
                self.grow(target)
                self.idle(self.args.settle)
                self.push(self.args.pushes)
                if target == ingest_at:
                    for rnd in range(1, self.args.ingest_rounds + 1):
                        self.ingest(rnd)
                    self.idle(self.args.idle)
            print("console RSS by step (sampled every second):")
            print("\n".join(self.sampler.summary()))
        finally:
            self.sampler.stop()
            for w in self.workers:
                w.close()
            self.api.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode")
    wk = sub.add_parser("worker")
    wk.add_argument("--bundle-file", required=True)
    wk.add_argument("--n", type=int, required=True)
    wk.add_argument("--prefix", required=True)
    wk.add_argument("--heartbeat", type=float, default=30.0)
    wk.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--defenders", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 5000, 10000])
    ap.add_argument("--pushes", type=int, default=10)
    ap.add_argument("--push-gap", type=float, default=0.5, help="seconds between PUTs")
    ap.add_argument("--events", type=int, default=200_000, help="events per ingest round (all defenders)")
    ap.add_argument("--batch", type=int, default=1000, help="defender batch size (events per message)")
    ap.add_argument(
        "--ingest-at", type=int, default=0, help="fleet size for the ingest rounds (default: first)"
    )
    ap.add_argument("--ingest-rounds", type=int, default=3)
    ap.add_argument("--heartbeat", type=float, default=30.0, help="defender heartbeat interval (s)")
    ap.add_argument("--per-worker", type=int, default=PER_WORKER)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds idle after connecting")
    ap.add_argument("--idle", type=float, default=30.0, help="seconds idle after the last ingest round")
    ap.add_argument("--db", default=None, help="postgresql://... (default: SQLite in a temp dir)")
    args = ap.parse_args()
    if args.mode == "worker":
        import uvloop

        uvloop.run(_worker(args))
        return
    from tests.fixtures.console import RunningConsole

    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="garrison-scale-") as d:
        console = RunningConsole(Path(d) / "console", db_url=args.db).start()
        print(
            f"console pid {console.proc.pid} on {'PostgreSQL' if args.db else 'SQLite'}; {load_note()}",
            flush=True,
        )
        try:
            Bench(args, console, Path(d)).run()
        finally:
            console.stop()


if __name__ == "__main__":
    main()
