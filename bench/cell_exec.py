"""fork+exec+wait inside a runc container with and without the cell defender's exec gate, and the time
from the app's start to protected. Interleaved rounds in the same run; median of rounds; load average.

Each round runs `sh -c 'i=0; while [ $i -lt N ]; do /bin/true; i=$((i+1)); done'` in the container
(busybox rootfs, overlay root), once with no defender and once with the defender holding every exec.

    .venv/bin/python bench/cell_exec.py [--execs 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cell_common import destroy, make_container, make_image, vcap_env

from garrison.cell.defender import CellDefender
from garrison.policy.model import RuntimePolicy


def loop(runc_root: Path, n: int) -> float:
    script = f"i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"
    t = time.perf_counter()
    subprocess.run(["runc", "--root", str(runc_root), "exec", *vcap_env("bench"), "bench", "/bin/sh", "-c", script],
                   check=True)
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--execs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    policy = RuntimePolicy.model_validate(
        {
            "rules": [
                {
                    "name": "r",
                    "processes": {"effect": "prevent", "deny": ["wget", "nc"], "drift_prevention": True},
                }
            ]
        }
    )
    with tempfile.TemporaryDirectory(prefix="garrison-cell-bench-") as d:
        base, runc_root = Path(d), Path(d) / "runc-root"
        base.chmod(0o711)
        runc_root.mkdir()
        make_container(base, make_image(base), runc_root, "bench")
        try:
            bare, guarded = [], []
            for _ in range(a.rounds):
                bare.append(loop(runc_root, a.execs))
                defender = CellDefender(policy, lambda e: None, roots=[str(runc_root)])
                defender.start()
                guarded.append(loop(runc_root, a.execs))
                defender.stop()
            b, g = statistics.median(bare), statistics.median(guarded)
            print(
                f"fork+exec+wait in the container: bare {b:.0f} µs, cell defender {g:.0f} µs = {g / b:.2f}x "
                f"(median of {a.rounds} interleaved rounds of {a.execs})"
            )
            # container start -> protected: the app process appears; the defender reports it
            defender = CellDefender(policy, lambda e: None, roots=[str(runc_root)])
            seen: list[float] = []
            defender.emit = lambda e: (
                seen.append(time.perf_counter()) if e.control == "cell.container_protected" else None
            )
            defender.start()
            t = time.perf_counter()
            subprocess.run(["runc", "--root", str(runc_root), "exec", "-d", *vcap_env("late"), "bench", "/bin/sleep", "30"],
                           check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while not seen and time.perf_counter() - t < 10:
                time.sleep(0.01)
            defender.stop()
            if seen:
                print(
                    f"app start -> protected (identity known, rule applied): {(seen[0] - t) * 1000:.0f} ms "
                    "(exec checks apply from container creation on)"
                )
        finally:
            destroy(base, runc_root, "bench")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
