"""App start-up time added by the defender (policy file, no console), medians of interleaved runs.

Two figures per run, each against the bare program measured in the same rounds:
  * to the app's exec: the app is `date +%s.%N`, which prints the time it started; what the defender
    adds before the app runs at all (the start-up an app's users wait for);
  * whole run: `/bin/true` under the defender, until the defender has exited (also its shut-down),
    with the CPU time (user + system) of the defender and the app.

Bytecode: an installed defender runs from compiled bytecode (pip writes it at install, the standalone
build bundles it). A source checkout with PYTHONDONTWRITEBYTECODE set compiles every module on every
start, which adds up to ~65 ms of CPU and 1.3-3 MiB. The bench measures the installed case by
default, with the bytecode cached in a temporary directory (PYTHONPYCACHEPREFIX), and the other with
`--no-bytecode-cache` (the 2026-12-02 morning figure, 571 ms, was taken that way).

App directory: under drift prevention the defender records every executable of the app's
directories (its working directory first) before the app starts, one `lstat` per file. The runs
start in an empty temporary app directory, so the figure is the defender's own; `--app-dir DIR`
starts them in DIR instead (a droplet's size matters: the garrison checkout with its .venv, ~14,000
files, adds ~70-100 ms of CPU; earlier figures were taken from there, whichever checkout it was).

    .venv/bin/python bench/defender_startup.py [--runs 10] [--no-bytecode-cache] [--app-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_MS = 386.0  # 2026-11-23, idle machine


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """(wall, CPU of the process tree) of one whole run."""
    c, t = _cpu(), time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t, _cpu() - c


def to_exec(cmd: list[str], env: dict[str, str], cwd: str) -> float:
    """Seconds from spawning `cmd` until the app (`date +%s.%N`, last in cmd) started."""
    t = time.time()
    out = subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1]) - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-bytecode-cache", action="store_true", help="compile every module on every start")
    ap.add_argument("--app-dir", help="working directory of the runs (default: an empty app directory)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        app_dir = a.app_dir or str(Path(d) / "app")
        os.makedirs(app_dir, exist_ok=True)
        pol = Path(d) / "p.json"
        pol.write_text(
            json.dumps(
                {"rules": [{"name": "r", "processes": {"drift_prevention": True, "effect": "prevent"}}]}
            )
        )
        env = {**os.environ, "DATA_FOLDER": d}
        if a.no_bytecode_cache:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(d) / "pycache")
        defender = [sys.executable, "-m", "garrison", "defender", "app-embedded", "-q", "--policy", str(pol)]
        date = ["date", "+%s.%N"]
        runs = {
            "bare /bin/true": ["/bin/true"],
            "bare python -c pass": [sys.executable, "-c", "pass"],
            "defender + /bin/true": [*defender, "/bin/true"],
        }
        timed(runs["defender + /bin/true"], env, app_dir)  # warm-up: writes the bytecode cache
        wall: dict[str, list[float]] = {k: [] for k in runs}
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        exec_at: dict[str, list[float]] = {"bare": [], "defender": []}
        for _ in range(a.runs):
            for k, cmd in runs.items():
                w, c = timed(cmd, env, app_dir)
                wall[k].append(w)
                cpu[k].append(c)
            exec_at["bare"].append(to_exec(date, env, app_dir))
            exec_at["defender"].append(to_exec([*defender, *date], env, app_dir))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    how = "no bytecode cache (source compiled at every start)" if a.no_bytecode_cache else "bytecode cached"
    print(f"start-up, median of {a.runs} interleaved runs, {how}, app directory {a.app_dir or '(empty)'}; "
          f"load average {load}")
    for k in runs:
        print(
            f"  {k:28s} {statistics.median(wall[k]) * 1000:8.1f} ms   "
            f"CPU {statistics.median(cpu[k]) * 1000:7.1f} ms"
        )
    to_app = (statistics.median(exec_at["defender"]) - statistics.median(exec_at["bare"])) * 1000
    added = (statistics.median(wall["defender + /bin/true"]) - statistics.median(wall["bare /bin/true"])) * 1000
    print(f"  added before the app's exec {to_app:8.1f} ms")
    print(
        f"  added by the defender       {added:8.1f} ms, whole run "
        f"({statistics.median(wall['defender + /bin/true']) / statistics.median(wall['bare python -c pass']):.1f}x "
        f"a bare interpreter start); goal <= {GOAL_MS:.0f} ms: {'met' if added <= GOAL_MS else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
