"""App-level cost of the defender, as users see it, against bare in the same run (interleaved rounds).

1. `http`: a small HTTP service (asyncio) whose every request opens a new TCP connection to a
   backend on loopback (what a service calling a database or another service without a pool does),
   driven by `wrk` with keep-alive; req/s under the defender vs bare. Goal ≥ 0.95. Also the CPU of
   the service and its defender per request while wrk ran (start-up excluded; the defender's share
   apart), which stays meaningful on a loaded machine where req/s do not, and the seccomp
   notifications per request (from the exit audit: whole run, the few of start-up included). The
   rule has the 1,000-entry network rule of bench/defender_connect.py, so every backend connect is
   decided. The service listens on its own port: no CNAF sits in front of it (the rule has no
   `cnaf` and PORT is not set), so this is the app under the defender, not the WAF path
   (bench/cnaf_throughput.py measures that).
2. `sh`: a shell job running 2,000 short `sh -c` invocations (a fork and an exec each); wall time,
   reported as bare/defender. Goal ≥ 0.90. Run with an allow-all rule and with drift prevention
   (Landlock), the same 1,000-entry network rule in both.

Each is run bare and under `defender app-embedded` on both data planes (DEFENDER_DATAPLANE=python
and native). Usage: .venv/bin/python bench/defender_app.py [--rounds 5] [--seconds 5] [--runs 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from defender_connect import _thousand_entries
from defender_exec import trapped_per_op

BACKEND = """
import asyncio, sys
async def serve(r, w):
    try:
        await r.read(1)
        w.write(b"k"); await w.drain()
    finally:
        w.close()
async def main():
    s = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=4096)
    print(s.sockets[0].getsockname()[1], flush=True)
    await s.serve_forever()
asyncio.run(main())
"""

SERVICE = """
import asyncio, sys
backend = int(sys.argv[1])
BODY = b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nContent-Type: text/plain\\r\\n\\r\\nok"
async def handle(r, w):
    try:
        while True:
            head = await r.readuntil(b"\\r\\n\\r\\n")
            br, bw = await asyncio.open_connection("127.0.0.1", backend)  # a new connection per request
            bw.write(b"q"); await bw.drain(); await br.read(1); bw.close()
            w.write(BODY); await w.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        w.close()
async def main():
    s = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[2]), backlog=4096)
    print("ready", flush=True)
    await s.serve_forever()
asyncio.run(main())
"""

# timed by the job itself, so the defender's own start-up (bench/defender_startup.py) is not counted
SH_JOB = 'date +%s.%N; i=0; while [ "$i" -lt "$1" ]; do sh -c "true"; i=$((i+1)); done; date +%s.%N'


def _free_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _defender(
    policy: Path, data: Path, plane: str | None, argv: list[str]
) -> tuple[list[str], dict[str, str]]:
    if plane is None:
        return argv, dict(os.environ)
    cmd = [sys.executable, "-m", "garrison", "defender", "app-embedded", "-q", "--policy", str(policy), *argv]
    return cmd, {**os.environ, "DATA_FOLDER": str(data), "DEFENDER_DATAPLANE": plane}


def _cpu_s(pids: list[int]) -> float:
    """CPU time (user + system, every thread) of these processes so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, ValueError):
                continue
    return out


def _notifications(data: Path) -> int:
    """Notifications the last run's defender received (its exit audit): the native loop's count, or
    what Python handled on the Python data plane."""
    n = -1
    log = data / "garrison-audit.jsonl"
    for line in log.read_text().splitlines() if log.exists() else []:
        ev = json.loads(line)
        if ev.get("control") == "exit":
            extra = ev.get("extra") or {}
            n = int(extra["native"]["received"]) if "native" in extra else int(extra.get("notifications", -1))
    return n


@dataclass
class HttpRound:
    rps: float
    cpu_us: float  # service + defender, per request
    defender_us: float  # the defender's own share (its loop thread included)
    notifications: float  # per request


def http_round(policy: Path, data: Path, plane: str | None, backend: int, seconds: int) -> HttpRound:
    """One wrk run: req/s and the CPU per request of the service and its defender while wrk ran
    (start-up excluded, and steadier than req/s on a loaded machine)."""
    port = _free_port()
    cmd, env = _defender(policy, data, plane, [sys.executable, "-c", SERVICE, str(backend), str(port)])
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=data)
    try:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise SystemExit(f"service did not start: {p.stderr.read() if p.stderr else ''}")
        tree = [p.pid] + (_children(p.pid) if plane is not None else [])
        cpu0, own0 = _cpu_s(tree), _cpu_s(tree[:1])
        out = subprocess.run(
            ["wrk", "-t2", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        cpu, own = _cpu_s(tree) - cpu0, _cpu_s(tree[:1]) - own0
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        n = re.search(r"(\d+) requests in", out)
        if not m or not n or "Non-2xx" in out or "Socket errors" in out:
            raise SystemExit(f"wrk run failed:\n{out}")
        requests = max(1, int(n.group(1)))
    finally:
        p.terminate()
        p.wait(timeout=30)
    notes = _notifications(data) / requests if plane is not None else 0.0
    own_us = own * 1e6 / requests if plane is not None else 0.0
    return HttpRound(float(m.group(1)), cpu / requests * 1e6, own_us, notes)


def sh_round(policy: Path, data: Path, plane: str | None, runs: int) -> tuple[float, float]:
    """(seconds the job took by its own clock, notifications the app waited for per `sh -c`)."""
    cmd, env = _defender(policy, data, plane, ["/bin/sh", "-c", SH_JOB, "job", str(runs)])
    # in the data directory: the defender captures the drift baseline of its working directory (in
    # the background under allow-all, while the job runs), which must not be this whole checkout
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=data).stdout.split()
    trapped = trapped_per_op(data, runs)[0] if plane is not None else 0.0
    return float(out[-1]) - float(out[0]), trapped


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--only", choices=["http", "sh"])
    a = ap.parse_args()
    from garrison.defender.dataplane import native_available

    planes: list[str | None] = [None, "python"] + (["native"] if native_available()[0] else [])
    tmp = Path(tempfile.mkdtemp(prefix="garrison-bench-app-"))
    net = {"effect": "prevent", "outbound": {"deny": _thousand_entries()}}
    policies = {
        "allow-all": {"rules": [{"name": "bench", "network": net}]},
        "drift": {
            "rules": [
                {
                    "name": "bench",
                    "network": net,
                    "processes": {"effect": "prevent", "drift_prevention": True},
                }
            ]
        },
    }
    files = {}
    for name, doc in policies.items():
        files[name] = tmp / f"{name}.json"
        files[name].write_text(json.dumps(doc))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    label = {None: "bare", "python": "defender, python data plane", "native": "defender, native data plane"}
    try:
        if a.only in (None, "http"):
            if not shutil.which("wrk"):
                print("http: skipped (wrk not installed; scripts/bootstrap --test installs it)")
            else:
                be = subprocess.Popen([sys.executable, "-c", BACKEND], stdout=subprocess.PIPE, text=True)
                assert be.stdout is not None
                backend = int(be.stdout.readline())
                try:
                    res: dict[str | None, list[HttpRound]] = {p: [] for p in planes}
                    for _ in range(a.rounds):
                        for p in planes:
                            res[p].append(http_round(files["allow-all"], tmp, p, backend, a.seconds))
                finally:
                    be.kill()
                bare = statistics.median(r.rps for r in res[None])
                bare_cpu = statistics.median(r.cpu_us for r in res[None])
                print(
                    f"http service, a new backend connection per request, wrk -c16 {a.seconds}s x {a.rounds}:"
                )
                for p in planes:
                    med = statistics.median(r.rps for r in res[p])
                    cpu = statistics.median(r.cpu_us for r in res[p])
                    line = (
                        f"  {label[p]:30s} median {med:9.0f} req/s  ({med / bare:4.2f} of bare; goal >= 0.95); "
                        f"CPU of service + defender {cpu:6.1f} µs/request ({cpu / bare_cpu:4.2f}x)"
                    )
                    if p is not None:
                        own = statistics.median(r.defender_us for r in res[p])
                        notes = statistics.median(r.notifications for r in res[p])
                        line += f", of it the defender {own:5.1f} µs; {notes:4.2f} notifications/request"
                    print(line)
        if a.only in (None, "sh"):
            for pol in ("allow-all", "drift"):
                sres: dict[str | None, list[tuple[float, float]]] = {p: [] for p in planes}
                for _ in range(a.rounds):
                    for p in planes:
                        sres[p].append(sh_round(files[pol], tmp, p, a.runs))
                bare = statistics.median(r[0] for r in sres[None])
                print(f"{a.runs} x sh -c, rule {pol}, {a.rounds} rounds:")
                for p in planes:
                    med = statistics.median(r[0] for r in sres[p])
                    trapped = f"; {sres[p][-1][1]:.2f} notifications per sh -c" if p else ""
                    print(
                        f"  {label[p]:30s} median {med:7.2f} s  (bare/this = {bare / med:4.2f}; goal >= 0.90{trapped})"
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
