"""TCP connect (+ close) from inside a container's network namespace with and without the cell
defender's nftables table (a realistic rule: bad-reputation set, a deny list, port-scan flow logging),
interleaved rounds in the same run, median of rounds, load average printed. The container is a
Garden-like runc container with a veth pair to the cell (10.200.254.0/30); the listener is on the cell
side. Nothing is trapped in user space: the rules run in the kernel on the first packet of each flow.

    .venv/bin/python bench/cell_connect.py [--connects 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cell_common import destroy, make_container, make_image

from garrison.cell import network
from garrison.cell.defender import CellDefender
from garrison.policy.model import RuntimePolicy

HOST_IP, CONT_IP, PORT = "10.200.254.1", "10.200.254.2", 7801
CLIENT = """
import socket, sys, time
n, ip, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
for _ in range(n):
    s = socket.create_connection((ip, port))
    s.close()
print((time.perf_counter() - t) / n * 1e6)
"""
POLICY = {"rules": [{"name": "net", "processes": {"effect": "disable"}, "network": {
    "effect": "prevent", "bad_reputation_ips": ["198.51.100.0/24", "203.0.113.7"],
    "outbound": {"deny": [{"cidr": "192.0.2.0/24"}, {"cidr": "*", "ports": [{"start": 25, "end": 25}]}]},
    "port_scan": {"enabled": True, "threshold": 65536, "window_s": 10}}}]}


def _serve(sock: socket.socket, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except OSError:
            continue
        conn.close()


def _veth(pid: int) -> None:
    for cmd in (["ip", "link", "add", "ghbench", "type", "veth", "peer", "name", "gcbench"],
                ["ip", "link", "set", "gcbench", "netns", str(pid)],
                ["ip", "addr", "add", f"{HOST_IP}/30", "dev", "ghbench"], ["ip", "link", "set", "ghbench", "up"],
                ["nsenter", "-t", str(pid), "-n", "ip", "addr", "add", f"{CONT_IP}/30", "dev", "gcbench"],
                ["nsenter", "-t", str(pid), "-n", "ip", "link", "set", "gcbench", "up"]):
        subprocess.run(cmd, check=True, capture_output=True)


def _round(pid: int, n: int) -> float:
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", sys.executable, "-c", CLIENT, str(n), HOST_IP, str(PORT)],
                         check=True, capture_output=True, text=True)
    return float(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connects", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    policy = RuntimePolicy.model_validate(POLICY)
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="garrison-cell-connect-") as d:
        base, runc_root = Path(d), Path(d) / "runc-root"
        base.chmod(0o711)
        runc_root.mkdir()
        make_container(base, make_image(base), runc_root, "connect")
        try:
            pid = json.loads(subprocess.run(["runc", "--root", str(runc_root), "state", "connect"], check=True,
                                            capture_output=True, text=True).stdout)["pid"]
            _veth(pid)
            srv = socket.create_server((HOST_IP, PORT), backlog=1024)
            srv.settimeout(0.5)
            threading.Thread(target=_serve, args=(srv, stop), daemon=True).start()
            _round(pid, 200)  # warm up
            bare, ruled = [], []
            for _ in range(a.rounds):
                network.apply(pid, network.clear_script())
                bare.append(_round(pid, a.connects))
                defender = CellDefender(policy, lambda e: None, roots=[str(runc_root)])
                defender.start()  # applies the table at discovery
                ruled.append(_round(pid, a.connects))
                defender.stop()
            table = subprocess.run(["nsenter", "-t", str(pid), "-n", "nft", "list", "table", "inet", "garrison"],
                                   capture_output=True, text=True).stdout
            assert "badrep4" in table, "the defender's table was not in place"
            b, r = statistics.median(bare), statistics.median(ruled)
            print(f"connect+close in the container: bare {b:.0f} µs, with the cell defender's nftables table "
                  f"{r:.0f} µs = {r / b:.2f}x (median of {a.rounds} interleaved rounds of {a.connects})")
        finally:
            stop.set()
            subprocess.run(["ip", "link", "del", "ghbench"], capture_output=True)
            destroy(base, runc_root, "connect")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
