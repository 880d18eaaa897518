"""Throughput and latency of the CNAF proxy vs the bare back end, measured in the same run with wrk.

Starts bench/cnaf_backend.py and `garrison cnaf proxy` (every attack class on, effect prevent) in
front of it, then alternates wrk runs direct / through the proxy and prints req/s, p99 latency,
the req/s ratio (goals, issue 12: >= 0.60 of direct with a unique URL per request, >= 0.80 with a
repeated one), the p99 added (goal < 2 ms) and CPU per request. When the `libmodsecurity` wheel
and a CRS are installed (`pip install -e '.[bench]'`, Debian's modsecurity-crs) ModSecurity v3 + CRS
is measured in the same rounds as a proxy in front of the same back end (bench/cnaf_modsec.py) and
the CNAF/ModSecurity ratio printed (goal >= 10).

    .venv/bin/python bench/cnaf_throughput.py [--unique [--shape plain|browser]] [--connections 32] [--duration 10] [--rounds 5]
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


# Every request a different URL, so no cache anywhere can answer from a previous request. Its values
# are plain words and numbers, which CNAF proves harmless without running the detectors (one shared
# result for plain queries): the cheapest new request there is.
_UNIQUE_LUA = """
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/api/items?page=" .. n .. "&q=coffee+beans+" .. n .. "&sort=price")
end
"""

# A browser-shaped request, new in every part a WAF reads: query values with punctuation (an
# apostrophe, an e-mail address) that the plain-query shortcut cannot clear, a per-request cookie and
# Referer, a real browser's User-Agent and Accept-Language. Every detector and CRS run on it.
_BROWSER_LUA = """
local n = 0
request = function()
  n = n + 1
  local headers = {}
  headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
  headers["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
  headers["Accept-Language"] = "en-GB,en;q=0.7,de;q=0.3"
  headers["Cookie"] = "sid=s" .. (n * 7919) .. "x" .. n .. "; theme=dark; consent=yes"
  headers["Referer"] = "https://shop.example/items/" .. n .. "?from=search&tab=reviews"
  return wrk.format("GET", "/api/items?page=" .. n .. "&q=O%27Reilly+coffee+" .. n
    .. "&email=user" .. n .. "%40mail.example&sort=price", headers)
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
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are printed")
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
    ap.add_argument(
        "--modsec",
        type=int,
        default=1,
        metavar="PL",
        help="ModSecurity + CRS at this paranoia level in the same rounds (default 1, its cheapest; 0: not run)",
    )
    ap.add_argument(
        "--baseline-checkout",
        type=Path,
        metavar="DIR",
        help="also a CNAF proxy run from this source tree (e.g. a `git worktree` of an older commit), "
        "same policy, measured in the same rounds: an A/B of two versions",
    )
    ap.add_argument("--unique", action="store_true", help="a different URL on every request (no cache hits)")
    ap.add_argument(
        "--shape",
        choices=["plain", "browser"],
        default="plain",
        help="with --unique: plain words and numbers in the query (cleared without the detectors), or "
        "browser: punctuated query values, per-request cookie and Referer (every detector and CRS run)",
    )
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
        wait_crs = args.policy != "none" and args.crs
        proxy = start_proxy(pport, bport, policy, "/dev/null", wait_crs=wait_crs)
        procs.append(proxy)
        # (label, process, port): measured in every round after the direct run, in this order
        targets: list[tuple[str, subprocess.Popen[str], int]] = [("via CNAF", proxy, pport)]
        if args.also_no_crs:
            off_policy = policy.with_name("cnaf-off.json")
            off_policy.write_text(json.dumps({**json.loads(policy.read_text()), "crs": {"enabled": False}}))
            off_port = free_port()
            off = start_proxy(off_port, bport, off_policy, "/dev/null", wait_crs=False)
            procs.append(off)
            targets.append(("via CNAF, CRS off", off, off_port))
        if args.baseline_checkout is not None:
            base_port = free_port()
            base = start_proxy(
                base_port,
                bport,
                policy,
                "/dev/null",
                wait_crs=wait_crs,
                checkout=args.baseline_checkout.resolve(),
            )
            procs.append(base)
            targets.append((f"via CNAF of {args.baseline_checkout.name}", base, base_port))
        modsec = start_modsec(args.modsec, bport) if args.modsec else None
        if modsec is not None:
            procs.append(modsec[0])
            targets.append((f"via ModSecurity + CRS PL{args.modsec}", *modsec))
        wait_port(bport)
        for _, _, port in targets:
            wait_port(port)
        script = None
        if args.unique:
            script = str(Path(tempfile.mkdtemp()) / "unique.lua")
            Path(script).write_text(_BROWSER_LUA if args.shape == "browser" else _UNIQUE_LUA)
        runs: dict[str, list[tuple[float, float]]] = {"direct": []}  # (req/s, p99 ms) per round
        cpu: dict[str, list[float]] = {}  # [CPU seconds, requests]
        everyone = [("direct", backend, bport), *targets]
        for _label, _, port in everyone:  # warm-up
            wrk(f"http://127.0.0.1:{port}{args.path}", args.connections, 2, args.threads, script)
        for _ in range(args.rounds):
            for label, proc, port in everyone:
                c0 = cpu_seconds(proc.pid)
                r, lat, n = wrk(
                    f"http://127.0.0.1:{port}{args.path}",
                    args.connections,
                    args.duration,
                    args.threads,
                    script,
                )
                spent = cpu.setdefault(label, [0.0, 0.0])
                spent[0] += cpu_seconds(proc.pid) - c0
                spent[1] += n
                runs.setdefault(label, []).append((r, lat))
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=10)
    report(args, runs, cpu)
    return 0


def start_modsec(paranoia: int, upstream_port: int) -> tuple[subprocess.Popen[str], int] | None:
    """ModSecurity + CRS as a proxy in front of the back end, or None (said why) when not installed."""
    try:
        import libmodsecurity  # noqa: F401
    except ImportError:
        print(
            "ModSecurity not measured: pip install -e '.[bench]' (the libmodsecurity wheel)", file=sys.stderr
        )
        return None
    if not Path("/usr/share/modsecurity-crs/rules").is_dir():
        print("ModSecurity not measured: no CRS in /usr/share/modsecurity-crs", file=sys.stderr)
        return None
    proc = subprocess.Popen(
        [PY, str(ROOT / "bench" / "cnaf_modsec.py"), str(paranoia), "--upstream", str(upstream_port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.terminate()
        raise SystemExit(f"ModSecurity server did not start: {line!r}")
    return proc, int(line)


def report(
    args: argparse.Namespace, runs: dict[str, list[tuple[float, float]]], cpu: dict[str, list[float]]
) -> None:
    med = {label: statistics.median(r for r, _ in rs) for label, rs in runs.items()}
    p99 = {label: statistics.median(lat for _, lat in rs) for label, rs in runs.items()}
    print(
        f"back end {args.backend}, CNAF policy {args.policy}, CRS {'on' if args.crs else 'off'}; wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration}s x{args.rounds} rounds, GET {f'<unique {args.shape} request each time>' if args.unique else args.path}"
    )
    load = os.getloadavg()
    print(
        f"load average after the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) on "
        f"{os.cpu_count()} CPUs — other load skews every side; CPU per request barely moves"
    )
    for label, rs in runs.items():
        spent, n = cpu[label]
        print(
            f"{label:34s} {med[label]:9.0f} req/s   p99 {p99[label]:7.2f} ms   CPU/request {1e6 * spent / max(n, 1):7.1f} µs"
            f"   (runs: {', '.join(f'{r:.0f}' for r, _ in rs)})"
        )
    dr = med["direct"]
    goal = 0.60 if args.unique else 0.80
    print(
        f"ratio CNAF/direct     {med['via CNAF'] / dr:6.2f}   (goal >= {goal:.2f}{f' with unique {args.shape} requests' if args.unique else ''})"
    )
    print(f"p99 added by CNAF     {p99['via CNAF'] - p99['direct']:6.2f} ms (goal < 2 ms)")
    if "via CNAF, CRS off" in med:
        print(f"ratio CNAF (CRS off)/direct {med['via CNAF, CRS off'] / dr:6.2f}")
    per_request = {label: 1e6 * spent / max(n, 1) for label, (spent, n) in cpu.items()}
    for label in [label for label in med if label.startswith("via CNAF of ")]:
        print(
            f"ratio {label[4:]}/direct {med[label] / dr:6.2f}; CNAF proxy CPU/request {per_request[label]:.1f} µs "
            f"(baseline) -> {per_request['via CNAF']:.1f} µs (this checkout)"
        )
    modsec = next((label for label in med if label.startswith("via ModSecurity")), None)
    if modsec is not None:
        print(
            f"ratio ModSecurity/direct {med[modsec] / dr:6.3f}; CNAF/ModSecurity {med['via CNAF'] / med[modsec]:6.1f}x "
            f"(goal >= 10x)"
        )


if __name__ == "__main__":
    raise SystemExit(main())
