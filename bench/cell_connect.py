"""TCP connect (+ close) from inside a container's network namespace with and without the cell
defender's nftables table (a realistic rule: bad-reputation set, a deny list, port-scan detection),
interleaved rounds in the same run, median of rounds, load average printed. The container is a
Garden-like runc container with a veth pair to the cell (10.200.254.0/30); the listener is on the cell
side. Nothing is trapped in user space: the rules run in the kernel on the first packet of each flow.

Three variants a round: no defender; the defender running with a rule that has no network controls
(its background work alone: discovery, pids and listening-port checks); the defender with the table.
A defender is started and settled (its table in place, its start-up done) before its round is timed:
the goal is about connects under a running defender, not its start-up, which short rounds used to
include.

    .venv/bin/python bench/cell_connect.py [--connects 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
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
    s.recv(1)  # the listener closes first: TIME_WAIT stays on its side, the client's ports stay free
    s.close()
print((time.perf_counter() - t) / n * 1e6, (time.process_time() - c) / n * 1e6)
"""
BLOCKS = """
import socket, sys, time
ip, port = sys.argv[1], int(sys.argv[2])
for line in sys.stdin:
    t, c = time.perf_counter(), time.process_time()
    n = int(line)
    for _ in range(n):
        s = socket.create_connection((ip, port))
        s.recv(1)
        s.close()
    print((time.perf_counter() - t) / n * 1e6, (time.process_time() - c) / n * 1e6, flush=True)
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
IDLE_POLICY = {"rules": [{"name": "idle", "processes": {"effect": "disable"}, "network": {"effect": "disable"}}]}
SETTLE_S = 1.0


def _veth(pid: int) -> None:
    for cmd in (["ip", "link", "add", "ghbench", "type", "veth", "peer", "name", "gcbench"],
                ["ip", "link", "set", "gcbench", "netns", str(pid)],
                ["ip", "addr", "add", f"{HOST_IP}/30", "dev", "ghbench"], ["ip", "link", "set", "ghbench", "up"],
                ["nsenter", "-t", str(pid), "-n", "ip", "addr", "add", f"{CONT_IP}/30", "dev", "gcbench"],
                ["nsenter", "-t", str(pid), "-n", "ip", "link", "set", "gcbench", "up"],
                # tens of thousands of connects a run: the listener closes first, so TIME_WAIT is on
                # its side; reuse is on anyway in case a client port is caught in TIME_WAIT (a connect
                # that has to search for a free port costs more, or retries its SYN after 1 s)
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


def table_alone(pid: int, script: str, blocks: int, n: int) -> tuple[float, float]:
    """The table's own cost, with nothing else changing: one client process (warm) runs blocks of `n`
    connects, the table applied before every other block (by the defender's own `apply`); the median
    CPU µs per connect+close of the blocks without and with it."""
    client = subprocess.Popen(["nsenter", "-t", str(pid), "-n", sys.executable, "-c", BLOCKS, HOST_IP, str(PORT)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert client.stdin is not None and client.stdout is not None
    got: dict[bool, list[float]] = {False: [], True: []}
    try:
        for i in range(2 * blocks):
            on = i % 2 == 1
            network.apply(pid, script if on else network.clear_script())
            client.stdin.write(f"{n}\n")
            client.stdin.flush()
            got[on].append(float(client.stdout.readline().split()[1]))
    finally:
        client.stdin.close()
        client.wait()
    return statistics.median(got[False]), statistics.median(got[True])


def _has_table(pid: int) -> bool:
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", "nft", "list", "table", "inet", "garrison"],
                         capture_output=True, text=True).stdout
    return "badrep4" in out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connects", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--blocks", type=int, default=15, help="blocks with and without the table, for its own cost")
    a = ap.parse_args()
    print(f"before: {load()}")
    policy, idle = RuntimePolicy.model_validate(POLICY), RuntimePolicy.model_validate(IDLE_POLICY)
    cpu: dict[str, list[float]] = {"bare": [], "idle": [], "ruled": []}
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
                time.sleep(SETTLE_S)  # as the other variants
                return _round(pid, a.connects, cpu["bare"])

            def under(rules: RuntimePolicy, name: str) -> Callable[[], float]:
                def measure() -> float:
                    network.apply(pid, network.clear_script())
                    defender = CellDefender(rules, lambda e: None, roots=[str(runc_root)])
                    defender.start()  # applies the table at discovery (the app is running)
                    try:
                        assert _has_table(pid) == (rules is policy), "the defender's table is not as expected"
                        time.sleep(SETTLE_S)  # its threads started, first rounds done
                        return _round(pid, a.connects, cpu[name])
                    finally:
                        defender.stop()

                return measure

            med = interleaved({"bare": bare, "idle": under(idle, "idle"), "ruled": under(policy, "ruled")}, a.rounds)
            b, i, r = med["bare"], med["idle"], med["ruled"]
            print(f"connect+close in the container: bare {b:.0f} µs, with the cell defender's nftables table "
                  f"{r:.0f} µs = {r / b:.2f}x (goal <= 1.05x; median of {a.rounds} interleaved rounds of "
                  f"{a.connects})")
            print(f"  the defender running without network rules: {i:.0f} µs = {i / b:.2f}x (its background work); "
                  f"the table against that, the same defender running: {r / i:.2f}x (on a loaded VM a running "
                  "defender's wake-ups alone change the wall clock: compare like with like)")
            cb, ci, cr = (statistics.median(cpu[k]) for k in ("bare", "idle", "ruled"))
            print(f"  the client's CPU per connect+close (less disturbed by load): bare {cb:.1f} µs, with the table "
                  f"{cr:.1f} µs = {cr / cb:.2f}x (defender without network rules {ci:.1f} µs)")
            script = network.ruleset(policy.rules[0].network)
            off, on = table_alone(pid, script, a.blocks, 2000)
            print(f"  the table alone (one warm client, blocks of 2000 with and without it alternating, {a.blocks} "
                  f"each, median): CPU {off:.1f} -> {on:.1f} µs per connect+close = {on / off:.3f}x")
        finally:
            if server is not None:
                server.kill()
                server.wait()
            subprocess.run(["ip", "link", "del", "ghbench"], capture_output=True)
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
