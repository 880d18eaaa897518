"""Throughput and latency of the CNAF proxy vs the bare back end, measured in the same run with wrk.

Starts bench/cnaf_backend.py and `garrison cnaf proxy` (every attack class on, effect prevent) in
front of it, then alternates wrk runs direct / through the proxy and prints req/s, p99 latency,
the req/s ratio (goal >= 0.80) and the p99 added (goal < 2 ms).

    .venv/bin/python bench/cnaf_throughput.py [--connections 32] [--duration 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cnaf_proxy_start import start_proxy

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on 127.0.0.1:{port}")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


# Every request a different URL, so no cache anywhere can answer from a previous request.
_UNIQUE_LUA = """
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/api/items?page=" .. n .. "&q=coffee+beans+" .. n .. "&sort=price")
end
"""


def wrk(
    url: str, connections: int, duration: int, threads: int, script: str | None = None
) -> tuple[float, float, int]:
    """(req/s, p99 ms, requests completed)."""
    extra = ["-s", script] if script else []
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", *extra, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if m is None:
        raise SystemExit(f"cannot parse wrk output:\n{out}")
    n = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, float(m.group(1)) * _UNITS[m.group(2)], n


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: unlike wall-clock rates, barely moved by other load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", choices=["asgi", "raw"], default="asgi", help="see bench/cnaf_backend.py")
    ap.add_argument(
        "--policy",
        choices=["prevent", "none"],
        default="prevent",
        help="'none' measures the bare proxy with inspection off",
    )
    ap.add_argument(
        "--crs", action=argparse.BooleanOptionalAction, default=True, help="OWASP CRS rules on (the default)"
    )
    ap.add_argument(
        "--also-no-crs",
        action="store_true",
        help="a second proxy with CRS off, measured in the same rounds (the cost of CRS in one run)",
    )
    ap.add_argument("--unique", action="store_true", help="a different URL on every request (no cache hits)")
    ap.add_argument("--path", default="/api/items?page=2&q=coffee+beans", help="request target wrk sends")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    procs: list[subprocess.Popen[str] | subprocess.Popen[bytes]] = []
    try:
        backend = subprocess.Popen(
            [PY, str(ROOT / "bench" / "cnaf_backend.py"), args.backend], stdout=subprocess.PIPE, text=True
        )
        procs.append(backend)
        assert backend.stdout is not None
        bport = int(backend.stdout.readline())
        pport = free_port()
        policy = Path(tempfile.mkdtemp()) / "cnaf.json"
        classes = [
            "sqli",
            "xss",
            "cmdi",
            "lfi",
            "rfi",
            "code_injection",
            "shellshock",
            "attack_tools",
            "protocol",
        ]
        policy.write_text(
            json.dumps(
                {
                    "enabled": args.policy != "none",
                    "effects": dict.fromkeys(classes, "prevent"),
                    "crs": {"enabled": args.crs},
                }
            )
        )
        proxy = start_proxy(pport, bport, policy, "/dev/null", wait_crs=args.policy != "none" and args.crs)
        procs.append(proxy)
        off = None
        if args.also_no_crs:
            off_policy = policy.with_name("cnaf-off.json")
            off_policy.write_text(json.dumps({**json.loads(policy.read_text()), "crs": {"enabled": False}}))
            off_port = free_port()
            off = start_proxy(off_port, bport, off_policy, "/dev/null", wait_crs=False)
            procs.append(off)
            wait_port(off_port)
        wait_port(bport)
        wait_port(pport)
        direct_url = f"http://127.0.0.1:{bport}{args.path}"
        proxy_url = f"http://127.0.0.1:{pport}{args.path}"
        script = None
        if args.unique:
            script = str(Path(tempfile.mkdtemp()) / "unique.lua")
            Path(script).write_text(_UNIQUE_LUA)
        wrk(direct_url, args.connections, 2, args.threads, script)  # warm-up
        wrk(proxy_url, args.connections, 2, args.threads, script)
        d_rps, d_p99, p_rps, p_p99 = [], [], [], []
        o_rps: list[float] = []
        app_cpu = proxy_cpu = off_cpu = 0.0
        app_n = proxy_n = off_n = 0
        for _ in range(args.rounds):
            c0 = cpu_seconds(backend.pid)
            r, lat, n = wrk(direct_url, args.connections, args.duration, args.threads, script)
            app_cpu += cpu_seconds(backend.pid) - c0
            app_n += n
            d_rps.append(r)
            d_p99.append(lat)
            c0 = cpu_seconds(proxy.pid)
            r, lat, n = wrk(proxy_url, args.connections, args.duration, args.threads, script)
            proxy_cpu += cpu_seconds(proxy.pid) - c0
            proxy_n += n
            p_rps.append(r)
            p_p99.append(lat)
            if off is not None:
                c0 = cpu_seconds(off.pid)
                r, lat, n = wrk(
                    f"http://127.0.0.1:{off_port}{args.path}",
                    args.connections,
                    args.duration,
                    args.threads,
                    script,
                )
                off_cpu += cpu_seconds(off.pid) - c0
                off_n += n
                o_rps.append(r)
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=10)
    dr, pr = statistics.median(d_rps), statistics.median(p_rps)
    dl, pl = statistics.median(d_p99), statistics.median(p_p99)
    print(
        f"back end {args.backend}, CNAF policy {args.policy}, CRS {'on' if args.crs else 'off'}; wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration}s x{args.rounds} rounds, GET {'<unique URL per request>' if args.unique else args.path}"
    )
    load = os.getloadavg()
    print(
        f"load average during the run: {load[0]:.1f} (1 min) on {os.cpu_count()} CPUs — other load skews both sides"
    )
    print(f"direct      {dr:10.0f} req/s   p99 {dl:7.2f} ms   (runs: {', '.join(f'{x:.0f}' for x in d_rps)})")
    print(f"via CNAF    {pr:10.0f} req/s   p99 {pl:7.2f} ms   (runs: {', '.join(f'{x:.0f}' for x in p_rps)})")
    print(f"ratio       {pr / dr:10.2f}   (goal >= 0.80)")
    print(f"p99 added   {pl - dl:10.2f} ms  (goal < 2 ms)")
    print(
        f"CPU per request: app {1e6 * app_cpu / max(app_n, 1):.1f} µs, CNAF proxy "
        f"{1e6 * proxy_cpu / max(proxy_n, 1):.1f} µs (from /proc; robust to other load)"
    )
    if o_rps:
        orr = statistics.median(o_rps)
        print(
            f"via CNAF, CRS off {orr:10.0f} req/s   (runs: {', '.join(f'{x:.0f}' for x in o_rps)}); ratio {orr / dr:.2f}; "
            f"proxy CPU {1e6 * off_cpu / max(off_n, 1):.1f} µs/request"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
