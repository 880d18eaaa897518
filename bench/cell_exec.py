"""fork+exec+wait inside a runc container with and without the cell defender's exec gate (answered by
the native responder, and by the Python one for comparison), and the time from the app's start to
protected. Interleaved rounds in the same run; median of rounds; load average printed.

Each round runs `sh -c 'i=0; while [ $i -lt N ]; do /bin/true; i=$((i+1)); done'` in the container
(busybox rootfs, overlay root) with no defender, then with the defender holding every exec. The
defender runs in this process: its CPU per exec (this process's CPU time over the loop) is printed
too, which the load of a shared machine disturbs less than wall-clock time.

    .venv/bin/python bench/cell_exec.py [--execs 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cell_common import bench_cell, interleaved, load, vcap_env

from garrison.cell.defender import CellDefender
from garrison.policy.model import RuntimePolicy

POLICY = {"rules": [{"name": "r", "processes": {"effect": "prevent", "deny": ["wget", "nc"],
                                                 "drift_prevention": True}}]}


def loop(runc_root: Path, n: int) -> tuple[float, float]:
    """(wall µs, this process's CPU µs) per fork+exec+wait."""
    script = f"i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"
    t, c = time.perf_counter(), time.process_time()
    subprocess.run(["runc", "--root", str(runc_root), "exec", *vcap_env("bench"), "bench", "/bin/sh", "-c", script],
                   check=True)
    return (time.perf_counter() - t) / n * 1e6, (time.process_time() - c) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--execs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    print(f"before: {load()}")
    policy = RuntimePolicy.model_validate(POLICY)
    cpu: dict[str, list[float]] = {"native": [], "python": []}
    stats: dict[str, int] = {}
    thread_cpu: list[float] = []
    with bench_cell("garrison-cell-bench-", "bench") as (_base, runc_root, _pid):

        def guarded(responder: str) -> Callable[[], float]:
            def measure() -> float:
                defender = CellDefender(policy, lambda e: None, roots=[str(runc_root)], exec_responder=responder)
                defender.start()
                assert defender.exec_responder == responder, defender.exec_responder_note
                loop(runc_root, 20)  # the files it runs are decided once (and cached) before timing
                before = defender.exec_stats()
                wall, used = loop(runc_root, a.execs)
                after = defender.exec_stats()
                if after:
                    thread_cpu.append((after["cpu_us"] - before["cpu_us"]) / a.execs)
                stats.update(after)
                defender.stop()
                cpu[responder].append(used)
                return wall

            return measure

        # container start -> protected: the app process appears; the defender reports it. The app stays:
        # the defenders of the rounds below find it at start (a drift baseline, so decisions are cached)
        seen: list[float] = []
        defender = CellDefender(policy, lambda e: (
            seen.append(time.perf_counter()) if e.control == "cell.container_protected" else None),
            roots=[str(runc_root)])
        defender.start()
        t = time.perf_counter()
        subprocess.run(["runc", "--root", str(runc_root), "exec", "-d", *vcap_env("bench"), "bench", "/bin/sleep",
                        "100000"], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        while not seen and time.perf_counter() - t < 10:
            time.sleep(0.01)
        defender.stop()
        if seen:
            print(f"app start -> protected (identity known, rule applied): {(seen[0] - t) * 1000:.0f} ms "
                  "(exec checks apply from container creation on)")
        time.sleep(1.2)  # the image's files settle (a file changed in the last second is not cached)
        med = interleaved({"bare": lambda: loop(runc_root, a.execs)[0], "native": guarded("native"),
                           "python": guarded("python")}, a.rounds)
        b, n, p = med["bare"], med["native"], med["python"]
        cn, cp = statistics.median(cpu["native"]), statistics.median(cpu["python"])
        print(f"fork+exec+wait in the container (median of {a.rounds} interleaved rounds of {a.execs}):")
        print(f"  bare {b:.0f} µs; native responder {n:.0f} µs = {n / b:.2f}x (goal <= 1.10x); "
              f"Python responder {p:.0f} µs = {p / b:.2f}x")
        print(f"  defender CPU per exec (all its threads): native {cn:.1f} µs, Python {cp:.1f} µs; last native "
              f"round: {stats.get('answered', 0)} execs answered natively, {stats.get('handed', 0)} by Python")
        print(f"  the native responder thread's own CPU per exec: {statistics.median(thread_cpu):.1f} µs")
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
