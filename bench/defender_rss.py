"""Resident memory of the defender process while it supervises an app, against a bare interpreter
(`python -c sleep`) measured in the same run.

    .venv/bin/python bench/defender_rss.py
"""

from __future__ import annotations

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


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        pol = Path(d) / "p.json"
        pol.write_text(json.dumps({"rules": [{"name": "r", "processes": {"drift_prevention": True}}]}))
        env = {**os.environ, "DATA_FOLDER": d}
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
            stderr=subprocess.DEVNULL,
        )
        try:
            b = settle_rss(bare)
            r = settle_rss(dfd, 1.0)
        finally:
            for p in (bare, dfd):
                p.terminate()
                p.wait()
    print("resident memory (VmRSS)")
    print(f"  bare python interpreter      {b / 1024:7.1f} MiB")
    print(f"  defender (policy file mode)  {r / 1024:7.1f} MiB   ratio {r / b:4.1f}x")


if __name__ == "__main__":
    main()
