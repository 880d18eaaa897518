"""Resident memory of the defender process while it supervises an app, against a bare interpreter
(`python -c sleep`) measured in the same run.

Bytecode as in bench/defender_startup.py: cached by default (an installed defender), or compiled at
start with `--no-bytecode-cache` (a source checkout under PYTHONDONTWRITEBYTECODE: the compiler's
memory stays in the process, 1.3-3 MiB; the 2026-12-02 morning figure, 41.5 MiB, was taken that way).

    .venv/bin/python bench/defender_rss.py [--no-bytecode-cache]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def settle_rss(p: subprocess.Popen[bytes], wait: float = 2.0) -> int:
    time.sleep(wait)
    return rss_kib(p.pid)


GOAL_MIB = 37.0  # 2026-11-23


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-bytecode-cache", action="store_true", help="compile every module at start")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        pol = Path(d) / "p.json"
        pol.write_text(json.dumps({"rules": [{"name": "r", "processes": {"drift_prevention": True}}]}))
        env = {**os.environ, "DATA_FOLDER": d}
        if a.no_bytecode_cache:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(d) / "pycache")
            warm = [sys.executable, "-m", "garrison", "defender", "app-embedded", "-q", "--policy", str(pol), "true"]
            subprocess.run(warm, env=env, cwd=d, check=True, stderr=subprocess.DEVNULL)  # writes the cache
        bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
        dfd = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "garrison",
                "defender",
                "app-embedded",
                "-q",
                "--policy",
                str(pol),
                "sleep",
                "30",
            ],
            env=env,
            cwd=d,  # an app directory of its own, like bench/defender_startup.py
            stderr=subprocess.DEVNULL,
        )
        try:
            b = settle_rss(bare)
            r = settle_rss(dfd, 1.0)
        finally:
            for p in (bare, dfd):
                p.terminate()
                p.wait()
    how = "no bytecode cache" if a.no_bytecode_cache else "bytecode cached"
    print(f"resident memory (VmRSS), {how}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  bare python interpreter      {b / 1024:7.1f} MiB")
    print(
        f"  defender (policy file mode)  {r / 1024:7.1f} MiB   ratio {r / b:4.1f}x; "
        f"goal <= {GOAL_MIB:.0f} MiB: {'met' if r / 1024 <= GOAL_MIB else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
