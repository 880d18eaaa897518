"""N Garden-like runc containers on one cell held by one cell defender (`garrison defender cell`, run
as the CLI): time from container creation to its exec gate on and from the app's start to protected
(identity known, rule applied), enforcement checked in a sample of containers, the defender's RSS and
its CPU use while it holds them all. Load average printed; numbers are only comparable on a quiet
machine.

    .venv/bin/python bench/cell_scale.py [--containers 250] [--sample 10]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cell_common import destroy, make_container, make_image, run_app, vcap_env

POLICY = {"rules": [{"name": "cell", "processes": {"effect": "prevent", "deny": ["wget"], "drift_prevention": True,
                                                    "fork_bomb_guard": {"max_procs": 256, "max_forks_per_s": 200}}}]}


def _audits(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _wait_for(log: Path, control: str, n: int, timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        seen = {a["extra"]["container"]: a["time"] for a in _audits(log) if a.get("control") == control}
        if len(seen) >= n or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def _proc(pid: int) -> tuple[int, int, float]:
    """(VmRSS KiB, VmHWM KiB, CPU seconds) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(status.split("VmRSS:")[1].split()[0])
    hwm = int(status.split("VmHWM:")[1].split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, hwm, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=250)
    ap.add_argument("--sample", type=int, default=10, help="containers in which enforcement is checked")
    a = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="garrison-cell-scale-") as d:
        base = Path(d)
        base.chmod(0o711)
        runc_root = base / "runc-root"
        runc_root.mkdir()
        image = make_image(base)
        policy, log = base / "policy.json", base / "audits.jsonl"
        policy.write_text(json.dumps(POLICY))
        defender = subprocess.Popen([sys.executable, "-m", "garrison", "defender", "cell", "--policy", str(policy),
                                     "--runc-root", str(runc_root), "--audit-log", str(log)],
                                    stderr=subprocess.PIPE, text=True)
        ids = [f"scale{i:04d}" for i in range(a.containers)]
        created: dict[str, float] = {}
        app_started: dict[str, float] = {}
        try:
            assert defender.stderr is not None
            defender.stderr.readline()  # watching
            t0 = time.monotonic()
            for cid in ids:
                make_container(base, image, runc_root, cid)
                created[cid] = time.time()  # runc returned: the container exists and runs its init
                app_started[cid] = time.time()
                run_app(runc_root, cid, cid)
            took = time.monotonic() - t0
            watched = _wait_for(log, "cell.container_watched", len(ids), 60)
            protected = _wait_for(log, "cell.container_protected", len(ids), 60)
            gate = [max(0.0, watched[c] - created[c]) for c in ids if c in watched]
            prot = [protected[c] - app_started[c] for c in ids if c in protected]
            print(f"{len(ids)} containers created and their apps started in {took:.1f} s")
            print(f"exec gate on: {len(watched)}/{len(ids)}; runc returned -> gate on: median "
                  f"{statistics.median(gate) * 1000:.0f} ms, p95 {_pct(gate, 0.95) * 1000:.0f} ms, max "
                  f"{max(gate) * 1000:.0f} ms (0 = before runc returned)")
            print(f"protected (identity, rule): {len(protected)}/{len(ids)}; app start -> protected: median "
                  f"{statistics.median(prot) * 1000:.0f} ms, p95 {_pct(prot, 0.95) * 1000:.0f} ms, max "
                  f"{max(prot) * 1000:.0f} ms")
            refused = 0
            step = max(1, len(ids) // a.sample)
            sample = ids[::step][: a.sample]
            for cid in sample:
                r = subprocess.run(["runc", "--root", str(runc_root), "exec", *vcap_env(cid), cid, "/bin/wget", "-h"],
                                   capture_output=True, text=True)
                refused += r.returncode != 0 and "not permitted" in r.stderr.lower()
            print(f"denied program refused in {refused}/{len(sample)} sampled containers")
            _rss, _hwm, cpu0 = _proc(defender.pid)
            time.sleep(10)
            rss, hwm, cpu1 = _proc(defender.pid)
            print(f"defender holding {len(ids)} containers: RSS {rss / 1024:.1f} MiB (peak {hwm / 1024:.1f} MiB), "
                  f"CPU while idle {100 * (cpu1 - cpu0) / 10:.1f}% of one core")
        finally:
            defender.terminate()
            defender.wait(30)
            for cid in ids:
                if cid in created:
                    destroy(base, runc_root, cid)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
