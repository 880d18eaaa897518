"""App start-up time added by the defender: `/bin/true` bare vs under the defender (policy file, no
console), medians of interleaved runs in the same process.

    .venv/bin/python bench/defender_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        pol = Path(d) / "p.json"
        pol.write_text(
            json.dumps(
                {"rules": [{"name": "r", "processes": {"drift_prevention": True, "effect": "prevent"}}]}
            )
        )
        env = {**os.environ, "DATA_FOLDER": d}
        bare_cmd = ["/bin/true"]
        py_cmd = [sys.executable, "-c", "pass"]
        def_cmd = [
            sys.executable,
            "-m",
            "garrison",
            "defender",
            "app-embedded",
            "-q",
            "--policy",
            str(pol),
            "/bin/true",
        ]
        res: dict[str, list[float]] = {
            "bare /bin/true": [],
            "bare python -c pass": [],
            "defender + /bin/true": [],
        }
        for _ in range(a.runs):
            res["bare /bin/true"].append(timed(bare_cmd, env))
            res["bare python -c pass"].append(timed(py_cmd, env))
            res["defender + /bin/true"].append(timed(def_cmd, env))
    med = {k: statistics.median(v) * 1000 for k, v in res.items()}
    print(f"start-up, median of {a.runs} interleaved runs")
    for k, v in med.items():
        print(f"  {k:28s} {v:8.1f} ms")
    added = med["defender + /bin/true"] - med["bare /bin/true"]
    print(
        f"  added by the defender       {added:8.1f} ms "
        f"({med['defender + /bin/true'] / med['bare python -c pass']:.1f}x a bare interpreter start)"
    )


if __name__ == "__main__":
    main()
