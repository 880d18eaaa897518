"""Start `garrison cnaf proxy` for a benchmark and wait until it really inspects with CRS.

The proxy opens its port at once and loads the OWASP CRS databases in a background thread (on a
machine with a cold cache that is a 15-40 s Hyperscan compile). A benchmark that starts measuring
when the port opens therefore measures the CNAF's own detectors alone, with a compiler eating a
CPU beside them; waiting for the proxy's CRS start-up line avoids both.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]


def start_proxy(
    listen_port: int,
    upstream_port: int,
    policy: Path,
    audit_log: str,
    *,
    wait_crs: bool,
    timeout: float = 300.0,
    checkout: Path = ROOT,
) -> subprocess.Popen[str]:
    """The proxy process; with `wait_crs`, returns once its CRS line ("… OWASP CRS …") was printed.
    `checkout`: the source tree whose `garrison` runs (another checkout: an A/B of two versions)."""
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "garrison",
            "cnaf",
            "proxy",
            "--listen",
            f"127.0.0.1:{listen_port}",
            "--upstream",
            f"127.0.0.1:{upstream_port}",
            "--policy",
            str(policy),
            "--audit-log",
            audit_log,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=checkout,
    )
    ready = threading.Event()

    def drain() -> None:  # keep reading stderr so the proxy never blocks on a full pipe
        assert proc.stderr is not None
        for line in proc.stderr:
            if "OWASP CRS" in line:
                print(line.rstrip(), file=sys.stderr, flush=True)
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if wait_crs and not ready.wait(timeout):
        proc.terminate()
        raise SystemExit(f"the CNAF proxy did not load CRS within {timeout:.0f} s")
    return proc
