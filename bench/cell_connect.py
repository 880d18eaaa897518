"""TCP connect (+ close) from inside a container's network namespace with and without the cell
defender's nftables table (a realistic rule: bad-reputation set, a deny list, port-scan detection),
interleaved rounds in the same run, median of rounds, load average printed. The container is a
Garden-like runc container with a veth pair to the cell (10.200.254.0/30); the listener is on the cell
side. Nothing is trapped in user space: the rules run in the kernel on the first packet of each flow.

    .venv/bin/python bench/cell_connect.py [--connects 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cell_common import bench_cell, interleaved, load

from garrison.cell import network
from garrison.cell.defender import CellDefender
from garrison.policy.model import RuntimePolicy

HOST_IP, CONT_IP, PORT = "10.200.254.1", "10.200.254.2", 7801
CLIENT = """
import socket, sys, time
n, ip, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
t, c = time.perf_counter(), time.process_time()
for _ in range(n):
    s = socket.create_connection((ip, port))
    s.close()
print((time.perf_counter() - t) / n * 1e6, (time.process_time() - c) / n * 1e6)
"""
SERVER = """
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])), backlog=4096)
print("ready", flush=True)
while True:
    srv.accept()[0].close()
"""
POLICY = {"rules": [{"name": "net", "processes": {"effect": "disable"}, "network": {
    "effect": "prevent", "bad_reputation_ips": ["198.51.100.0/24", "203.0.113.7"],
    "outbound": {"deny": [{"cidr": "192.0.2.0/24"}, {"cidr": "*", "ports": [{"start": 25, "end": 25}]}]},
    "port_scan": {"enabled": True, "threshold": 65536, "window_s": 10}}}]}


def _veth(pid: int) -> None:
    for cmd in (["ip", "link", "add", "ghbench", "type", "veth", "peer", "name", "gcbench"],
                ["ip", "link", "set", "gcbench", "netns", str(pid)],
                ["ip", "addr", "add", f"{HOST_IP}/30", "dev", "ghbench"], ["ip", "link", "set", "ghbench", "up"],
                ["nsenter", "-t", str(pid), "-n", "ip", "addr", "add", f"{CONT_IP}/30", "dev", "gcbench"],
                ["nsenter", "-t", str(pid), "-n", "ip", "link", "set", "gcbench", "up"],
                # tens of thousands of connects a run: without reuse the client's TIME_WAIT sockets
                # exhaust the ephemeral ports within a minute (1 s SYN retries, rounds 40x slower)
                ["nsenter", "-t", str(pid), "-n", "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"]):
        subprocess.run(cmd, check=True, capture_output=True)


def _round(pid: int, n: int, cpu: list[float] | None = None) -> float:
    """Wall µs per connect+close (the client's CPU µs per connect appended to `cpu`)."""
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", sys.executable, "-c", CLIENT, str(n), HOST_IP, str(PORT)],
                         check=True, capture_output=True, text=True)
    wall, used = (float(x) for x in out.stdout.split())
    if cpu is not None:
        cpu.append(used)
    return wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connects", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    print(f"before: {load()}")
    policy = RuntimePolicy.model_validate(POLICY)
    cpu: dict[str, list[float]] = {"bare": [], "ruled": []}
    server: subprocess.Popen[str] | None = None
    with bench_cell("garrison-cell-connect-", "connect") as (_base, runc_root, pid):
        try:
            _veth(pid)
            # the listener in a process of its own: the defender's threads in this one never delay it
            server = subprocess.Popen([sys.executable, "-c", SERVER, HOST_IP, str(PORT)], stdout=subprocess.PIPE, text=True)
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            _round(pid, 200)  # warm up

            def bare() -> float:
                network.apply(pid, network.clear_script())
                return _round(pid, a.connects, cpu["bare"])

            def ruled() -> float:
                defender = CellDefender(policy, lambda e: None, roots=[str(runc_root)])
                defender.start()  # applies the table at discovery
                try:
                    return _round(pid, a.connects, cpu["ruled"])
                finally:
                    defender.stop()

            med = interleaved({"bare": bare, "ruled": ruled}, a.rounds)
            table = subprocess.run(["nsenter", "-t", str(pid), "-n", "nft", "list", "table", "inet", "garrison"],
                                   capture_output=True, text=True).stdout
            assert "badrep4" in table, "the defender's table was not in place"
            b, r = med["bare"], med["ruled"]
            print(f"connect+close in the container: bare {b:.0f} µs, with the cell defender's nftables table "
                  f"{r:.0f} µs = {r / b:.2f}x (goal <= 1.05x; median of {a.rounds} interleaved rounds of "
                  f"{a.connects})")
            cb, cr = statistics.median(cpu["bare"]), statistics.median(cpu["ruled"])
            print(f"  the client's CPU per connect+close (less disturbed by load): bare {cb:.1f} µs, with the table "
                  f"{cr:.1f} µs = {cr / cb:.2f}x")
        finally:
            if server is not None:
                server.kill()
                server.wait()
            subprocess.run(["ip", "link", "del", "ghbench"], capture_output=True)
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
