"""What one trapped call costs under the native data plane, split between the app and the loop thread.

The HTTP bench (defender_app.py) sees one notification per request; this bench prices that round
trip alone with a C app, bare vs `defender app-embedded` (native plane, the 1,000-entry network rule
of defender_connect.py), interleaved rounds, medians, load average printed:

- `unix`: connect() of an AF_UNIX socket to a path that does not exist. Trapped, the loop reads the
  address, takes the socket, sees it cannot reach an IP address and answers CONTINUE: the round
  trip with nothing emulated (the kernel's own ENOENT follows).
- `inet`: socket + connect + close to a loopback listener. Trapped, the loop decides the address
  and makes the connect itself on the app's socket (emulation): the TCP handshake moves from the
  app's CPU time to the loop's.

Per operation it prints the wall time, the app's own CPU (getrusage inside the app, start-up
excluded) and the loop thread's CPU (garrison-dp-c in /proc, read just before and after the timed
part). Usage: .venv/bin/python bench/defender_roundtrip.py [--ops 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from defender_app import _defender
from defender_connect import _thousand_entries, server

C_APP = r"""
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static double cpu(void) {
    struct rusage r; getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}
int main(int argc, char **argv) {
    int n = atoi(argv[2]), inet = !strcmp(argv[1], "inet");
    struct sockaddr_un u = {.sun_family = AF_UNIX, .sun_path = "/nonexistent/garrison-roundtrip"};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(inet ? atoi(argv[3]) : 0)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int us = socket(AF_UNIX, SOCK_STREAM, 0);
    char go;
    printf("ready\n"); fflush(stdout);
    if (read(0, &go, 1) != 1) return 1;
    double c0 = cpu(), t0 = now();
    for (int i = 0; i < n; i++) {
        if (inet) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(s, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
            close(s);
        } else if (connect(us, (struct sockaddr *)&u, sizeof u) == 0) {
            return 1;
        }
    }
    double t1 = now(), c1 = cpu();
    printf("%f %f\n", (t1 - t0) / n * 1e6, (c1 - c0) / n * 1e6); fflush(stdout);
    return read(0, &go, 1) == 1 ? 0 : 1;
}
"""


@dataclass
class Round:
    wall_us: float
    app_us: float
    loop_us: float


def _loop_cpu_s(pid: int) -> float:
    """CPU seconds of the defender's native loop thread (0 when there is none: bare)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        if "(garrison-dp-c)" in stat:
            f = stat.rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def one(app: Path, kind: str, ops: int, port: int, policy: Path, data: Path, plane: str | None) -> Round:
    argv, env = _defender(policy, data, plane, [str(app), kind, str(ops), str(port)])
    p = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=data)
    assert p.stdin is not None and p.stdout is not None
    try:
        if p.stdout.readline().strip() != "ready":
            raise SystemExit(f"{kind}: the app did not start")
        loop0 = _loop_cpu_s(p.pid)
        p.stdin.write("g")
        p.stdin.flush()
        out = p.stdout.readline().split()
        loop = _loop_cpu_s(p.pid) - loop0
        if len(out) != 2:
            raise SystemExit(f"{kind}: the app failed")
        p.stdin.write("q")
        p.stdin.close()
    finally:
        p.wait(timeout=60)
    return Round(float(out[0]), float(out[1]), loop / ops * 1e6)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    from garrison.defender.dataplane import native_available

    if not native_available()[0] or not shutil.which("gcc"):
        raise SystemExit("needs the native data plane and gcc")
    tmp = Path(tempfile.mkdtemp(prefix="garrison-bench-roundtrip-"))
    os.chmod(tmp, 0o755)
    peer, port = server()
    try:
        (tmp / "app.c").write_text(C_APP)
        app = tmp / "app"
        subprocess.run(["gcc", "-O2", "-o", str(app), str(tmp / "app.c")], check=True)
        policy = tmp / "policy.json"
        net = {"effect": "prevent", "outbound": {"deny": _thousand_entries()}}
        policy.write_text(json.dumps({"rules": [{"name": "bench", "network": net}]}))
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for kind in ("unix", "inet"):
            res: dict[str, list[Round]] = {"bare": [], "native": []}
            for _ in range(a.rounds):
                for plane in res:
                    res[plane].append(
                        one(app, kind, a.ops, port, policy, tmp, None if plane == "bare" else plane)
                    )
            med = {k: Round(*(statistics.median(getattr(r, f) for r in v) for f in Round.__annotations__))
                   for k, v in res.items()}  # fmt: skip
            b, n = med["bare"], med["native"]
            extra = n.app_us + n.loop_us - b.app_us
            print(
                f"{kind}: {a.ops} ops x {a.rounds} rounds, medians per op: "
                f"bare wall {b.wall_us:6.2f} µs, CPU {b.app_us:6.2f} µs | native wall {n.wall_us:6.2f} µs, "
                f"CPU app {n.app_us:6.2f} + loop {n.loop_us:6.2f} µs (+{extra:5.2f} µs per round trip)"
            )
    finally:
        peer.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
