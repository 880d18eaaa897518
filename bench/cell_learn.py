"""Learning overhead on the cell: exec and connect in a runc container with the container's rule in
`learn` vs the same rule in `alert`, interleaved rounds in the same run, median of rounds, load
average printed (issue 17: learning costs <= 5 % over alert mode).

Each round starts a cell defender (in this process) with one of the two rules and a report sink (a
console link's stand-in: reports are only kept), waits until the container is protected (and, in
learn, until its learner exists), then runs `sh -c 'while ...; do /bin/true; done'` in the container
(fork+exec+wait) and connect+close from the container's network namespace to a listener on the cell
side of a veth pair. Wall time per op, and this process's CPU per op (the defender's threads: less
disturbed by a loaded machine). In learn, every exec is answered in Python (its argv is read from
the waiting thread) and new flows are counted per destination in the kernel (read once a second);
in alert the native responder answers a known file's exec and flows are not logged (no forensics
here). The last line checks the counts: every exec and every connect of the last learn round.

    flock /work/cell.lock .venv/bin/python bench/cell_learn.py [--execs 1000] [--connects 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cell_common import bench_cell, load, run_app, vcap_env
from cell_connect import HOST_IP, PORT, SERVER, _round, _veth

from garrison.cell.defender import CellDefender
from garrison.channel.protocol import ProfileReport
from garrison.policy.model import RuntimePolicy


def policy(effect: str) -> RuntimePolicy:
    """The same rule in both modes: deny lists alert; in learn the (empty) allow-lists are learnt."""
    return RuntimePolicy.model_validate({"rules": [{
        "name": "r",
        "processes": {"effect": effect, "deny": ["wget", "nc"]},
        "network": {"effect": effect, "bad_reputation_ips": ["198.51.100.0/24"],
                    "outbound": {"deny": [{"cidr": "192.0.2.0/24"}]}},
    }]})  # fmt: skip


def execs(runc_root: Path, n: int) -> float:
    script = f"i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"
    t = time.perf_counter()
    subprocess.run(["runc", "--root", str(runc_root), "exec", *vcap_env("bench"), "learn", "/bin/sh", "-c", script],
                   check=True)
    return (time.perf_counter() - t) / n * 1e6


def _learning(defender: CellDefender) -> bool:
    return any(tr.learner is not None and tr.learner.controls for tr in defender._tracked.values())


def one_round(mode: str, runc_root: Path, pid: int, a: argparse.Namespace, out: dict[str, list[float]],
              reports: list[ProfileReport]) -> None:
    defender = CellDefender(policy(mode), lambda e: None, roots=[str(runc_root)])
    defender.on_profile = lambda r: reports.append(r) is None
    defender.profile_interval = 3600.0
    defender.start()
    try:
        t = time.monotonic()
        while mode == "learn" and not _learning(defender) and time.monotonic() - t < 10:
            time.sleep(0.05)
        assert mode != "learn" or _learning(defender), "the container never learnt"
        execs(runc_root, 20)  # the files it runs are decided once (and cached in alert) before timing
        c = time.process_time()
        out[f"{mode} exec"].append(execs(runc_root, a.execs))
        out[f"{mode} exec cpu"].append((time.process_time() - c) / a.execs * 1e6)
        c = time.process_time()
        out[f"{mode} connect"].append(_round(pid, a.connects))
        out[f"{mode} connect cpu"].append((time.process_time() - c) / a.connects * 1e6)
    finally:
        defender.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--execs", type=int, default=1000)
    ap.add_argument("--connects", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    print(f"before: {load()}")
    out: dict[str, list[float]] = {f"{m} {k}": [] for m in ("alert", "learn")
                                   for k in ("exec", "exec cpu", "connect", "connect cpu")}
    server: subprocess.Popen[str] | None = None
    with bench_cell("garrison-cell-learn-", "learn") as (_base, runc_root, pid):
        try:
            _veth(pid)
            run_app(runc_root, "learn", "bench")  # the app (CF identity): what a learner is filed under
            server = subprocess.Popen([sys.executable, "-c", SERVER, HOST_IP, str(PORT)], stdout=subprocess.PIPE,
                                      text=True)
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            _round(pid, 200)  # warm up
            time.sleep(1.2)  # the image's files settle (a file changed in the last second is not cached)
            reports: list[ProfileReport] = []
            for _ in range(a.rounds):
                for mode in ("alert", "learn"):
                    reports.clear()
                    one_round(mode, runc_root, pid, a, out, reports)
            _print(out, a, reports)
        finally:
            if server is not None:
                server.kill()
                server.wait()
            subprocess.run(["ip", "link", "del", "ghbench"], capture_output=True)
    print(f"after: {load()}")


def _print(out: dict[str, list[float]], a: argparse.Namespace, reports: list[ProfileReport]) -> None:
    print(f"learn vs alert in a runc container ({a.rounds} interleaved rounds of {a.execs} fork+exec+wait "
          f"and {a.connects} connect+close):")
    print("  rounds: " + "; ".join(f"{k} " + " ".join(f"{x:.0f}" for x in v) for k, v in out.items()))
    for what in ("exec", "connect"):
        parts = []
        for kind, unit in (("", "wall"), (" cpu", "defender CPU")):
            al, le = (statistics.median(out[f"{m} {what}{kind}"]) for m in ("alert", "learn"))
            parts.append(f"{unit} alert {al:.1f} µs, learn {le:.1f} µs = {le / al:.2f}x")
        print(f"  {what:7s} " + " | ".join(parts) + "   (goal <= 1.05x)")
    seen: dict[str, Any] = {"true": 0, "dest": 0}
    for r in reports:  # the last learn round's reports: what the learner counted
        seen["true"] = max([seen["true"], *(p.count for p in r.processes if p.exe.endswith("/true"))])
        seen["dest"] = max([seen["dest"], *(d.count for d in r.destinations if d.port == PORT)])
    print(f"  last learn round counted: /bin/true run {seen['true']} times, the listener reached {seen['dest']} "
          f"times (of {a.execs + 20} and {a.connects})")


if __name__ == "__main__":
    main()
