"""File-integrity monitoring cost: time from a change to its event, and the monitor's CPU while a
package upgrade rewrites N files (dpkg's way: write a new file, rename it over the old one).

The monitor is `garrison host fim watch --json` in its own process; its CPU comes from
/proc/<pid>/stat, set against the CPU the "upgrade" itself took in the same run.

    .venv/bin/python bench/host_fim.py [--files 10000] [--latency-runs 50] [--inotify]
"""

from __future__ import annotations

import argparse
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Watcher:
    def __init__(self, root: Path, state: Path, inotify: bool) -> None:
        cmd = [
            sys.executable,
            "-m",
            "garrison",
            "host",
            "fim",
            "watch",
            "--json",
            "--path",
            str(root),
            "--state",
            str(state),
        ]
        if inotify:
            cmd.append("--inotify")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        self.mechanism = self.proc.stderr.readline().strip()  # type: ignore[union-attr]

    def lines(self, timeout: float) -> list[str]:
        out = []
        if self.sel.select(timeout):
            out.append(self.proc.stdout.readline())  # type: ignore[union-attr]
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--latency-runs", type=int, default=50)
    ap.add_argument("--inotify", action="store_true")
    a = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="garrison-fim-bench-") as d:
        root, state = Path(d) / "usr-lib", Path(d) / "state"
        for i in range(a.files):
            sub = root / f"pkg{i // 500}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"lib{i}.so").write_bytes(os.urandom(2048))
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "garrison",
                "host",
                "fim",
                "baseline",
                "--path",
                str(root),
                "--state",
                str(state),
            ],
            check=True,
            capture_output=True,
        )
        print(f"baseline of {a.files} files: {time.perf_counter() - t:.2f} s (process start included)")
        w = Watcher(root, state, a.inotify)
        print(w.mechanism)
        time.sleep(1.0)
        latencies = []
        target = root / "pkg0" / "lib0.so"
        for n in range(a.latency_runs):
            t0 = time.perf_counter()
            target.write_bytes(os.urandom(2048) + n.to_bytes(4, "little"))
            got = w.lines(5.0)
            if not got:
                print("  an event did not arrive within 5 s")
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.05)
        latencies.sort()
        print(
            f"change -> event: median {statistics.median(latencies):.1f} ms, "
            f"p90 {latencies[int(len(latencies) * 0.9) - 1]:.1f} ms, max {latencies[-1]:.1f} ms "
            f"({len(latencies)} changes)"
        )
        cpu0 = cpu_seconds(w.proc.pid)
        u0 = os.times()
        t = time.perf_counter()
        for i in range(a.files):  # the "upgrade": new content renamed over the old file, as dpkg does
            path = root / f"pkg{i // 500}" / f"lib{i}.so"
            tmp = path.with_suffix(".so.dpkg-new")
            tmp.write_bytes(os.urandom(2048))
            os.rename(tmp, path)
        upgrade_cpu = (os.times().user - u0.user) + (os.times().system - u0.system)
        upgrade_wall = time.perf_counter() - t
        seen = 0
        deadline = time.monotonic() + 120
        while seen < a.files and time.monotonic() < deadline:
            seen += len(w.lines(2.0))
        drained = time.perf_counter() - t
        monitor_cpu = cpu_seconds(w.proc.pid) - cpu0
        w.stop()
        print(f"upgrade of {a.files} files: {upgrade_wall:.2f} s wall, {upgrade_cpu:.2f} s CPU (the writer)")
        print(
            f"monitor: {seen} change events in {drained:.2f} s after the upgrade began, "
            f"{monitor_cpu:.2f} s CPU = {monitor_cpu / max(upgrade_cpu, 1e-9):.2f}x the writer's CPU, "
            f"{monitor_cpu / max(seen, 1) * 1e6:.0f} µs per change"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
