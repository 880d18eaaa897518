"""Connect latency: bare vs under the defender's network guard (emulated connect), same run.

The rule has 1,000 outbound entries (deny CIDRs with port sets, v4 and v6) and a bad-reputation
list, effect prevent: every connect is decided against all of them. Modes, interleaved per round:
bare; the guard under its own minimal runner on each data plane (`python`: the Python listener,
`native`: the C loop); and the full `defender app-embedded` on each data plane
(DEFENDER_DATAPLANE). Apps: a C loop timing connect() alone (`c`, the harshest ratio), a C loop
timing socket+connect+close per connection (`c-conn`, what a client pays per outbound connection)
and a Python loop. Prints median and best round with ratios against bare; goals ≤ 2.5x (connect)
and ≤ 2.0x (socket+connect+close). Usage:
    .venv/bin/python bench/defender_connect.py [N] [ROUNDS]
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from garrison.defender.net import TRAP_ONLY_IF_ARG_NONZERO, NetworkGuard
from garrison.defender.net.standalone import StandaloneContext, Supervised
from garrison.policy.model import Rule

PY_APP = """
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
addr = ("127.0.0.1", port)
socks = [socket.socket() for _ in range(n)]
t = time.perf_counter()
for s in socks:
    s.connect(addr)
dt = time.perf_counter() - t
for s in socks: s.close()
print(dt / max(n, 1) * 1e6)  # n = 0: the start-up-only run of the CPU figures
"""

C_APP = r"""
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int port = atoi(argv[1]), n = atoi(argv[2]);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int *fds = malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) fds[i] = socket(AF_INET, SOCK_STREAM, 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n; i++) if (connect(fds[i], (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    for (int i = 0; i < n; i++) close(fds[i]);
    printf("%f\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n / 1e3);
    return 0;
}
"""

# What a client does per outbound connection: socket, connect, close (the accept happens in the peer).
C_LIFECYCLE = (
    C_APP.replace("for (int i = 0; i < n; i++) fds[i] = socket(AF_INET, SOCK_STREAM, 0);", "")
    .replace(
        'for (int i = 0; i < n; i++) if (connect(fds[i], (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }',
        "for (int i = 0; i < n; i++) { fds[i] = socket(AF_INET, SOCK_STREAM, 0);"
        ' if (connect(fds[i], (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; } close(fds[i]); }',
    )
    .replace("for (int i = 0; i < n; i++) close(fds[i]);", "")
)


def _thousand_entries() -> list[str]:
    """1,000 deny entries a real rule could hold: /24s and hosts with port sets, v4 and v6."""
    out = []
    for i in range(1000):
        if i % 4 == 3:
            out.append(f"[2001:db8:{i:x}::]:{1 + i % 1000}-{1024 + i}")
        elif i % 4 == 2:
            out.append(f"172.{16 + i % 16}.{i % 250}.{i % 200 + 1}:{20 + i % 50}")
        else:
            out.append(f"10.{i // 250}.{i % 250}.0/24")
    return out


RULE = Rule.model_validate(
    {
        "name": "bench",
        "network": {
            "effect": "prevent",
            "outbound": {"deny": _thousand_entries()},
            "bad_reputation_ips": ["198.51.100.0/24", "203.0.113.7"],
        },
        "dns": {"effect": "prevent", "deny": ["*.evil.test"]},
    }
)


SERVER = """
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(4096)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept(); c.close()
"""


def server() -> tuple[subprocess.Popen[str], int]:
    """The peer runs in its own process so it does not compete with the supervisor for the GIL."""
    p = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    return p, int(p.stdout.readline())


def run(
    argv: list[str],
    supervised: bool,
    user: tuple[int, int] | None,
    rule: Rule | None = RULE,
    dataplane: str = "python",
) -> float:
    if not supervised:
        uid = user[0] if user else None
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            argv, capture_output=True, text=True, check=True, user=uid, group=user[1] if user else None
        )
        _note_cpu(before)
        return float(out.stdout)
    return supervise(StandaloneContext(rule), argv, user, dataplane, expect_emulated=rule is not None)[0]


def supervise(
    ctx: Any, argv: list[str], user: tuple[int, int] | None, dataplane: str, *, expect_emulated: bool,
    on_guard: Callable[[NetworkGuard], None] | None = None,
) -> tuple[float, NetworkGuard]:
    """`argv` run under the supervisor with a network guard for `ctx` (`on_guard` sees it before it
    starts): the figure the app printed, and the guard (stopped; its stats stay)."""
    guard = NetworkGuard(ctx, upstreams=[])
    if on_guard is not None:
        on_guard(guard)
    guard.start()
    try:
        sup = Supervised(
            argv, guard.handlers, ctx, nonzero_arg=TRAP_ONLY_IF_ARG_NONZERO, user=user,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, dataplane=dataplane, guard=guard,
        )  # fmt: skip
        rc, out, err = sup.communicate(timeout=300)
        if rc != 0 or (expect_emulated and guard.stats["emulated"] == 0 and sup.native is None):
            raise SystemExit(f"supervised run failed (rc={rc}, stats={guard.stats}): {err}")
        return float(out), guard
    finally:
        guard.stop()


def run_defender(argv: list[str], policy_dir: str, dataplane: str) -> float:
    """Through the full app-embedded defender (supervisor engineer's launcher), as the current user."""
    garrison = os.path.join(os.path.dirname(sys.executable), "garrison")
    policy = os.path.join(policy_dir, "policy.json")
    with open(policy, "w") as f:
        f.write(json.dumps({"rules": [RULE.model_dump(mode="json")]}))
    env = {**os.environ, "DATA_FOLDER": policy_dir, "DEFENDER_DATAPLANE": dataplane}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(
        [garrison, "defender", "app-embedded", "--quiet", "--policy", policy, *argv],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    if p.returncode != 0:
        raise SystemExit(f"defender run failed: {p.stderr}")
    _note_cpu(before)
    return float(p.stdout)


LAST_CPU = [0.0]


def _note_cpu(before: resource.struct_rusage) -> None:
    """CPU seconds the finished child tree used (app + defender)."""
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cpu_per_op(fn: Callable[[list[str]], float], argv: list[str], port: int, n: int) -> float:
    """CPU µs per connect of app + defender: a run of n connects minus a run of none (start-up and
    exit cancel). Wall time on a loaded machine depends on how the scheduler shares it (a task that
    sleeps in the supervisor is woken ahead of busy ones); CPU time does not."""
    fn([*argv, str(port), str(n)])
    full = LAST_CPU[0]
    fn([*argv, str(port), "0"])
    return (full - LAST_CPU[0]) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    user = (65534, 65534) if os.geteuid() == 0 else None
    srv, port = server()
    apps: dict[str, list[str]] = {"python": ["/usr/bin/python3" if user else sys.executable, "-c", PY_APP]}
    tmp = tempfile.mkdtemp(prefix="garrison-bench-")
    # The defender captures the drift baseline of its working directory in the background; run it in
    # an empty one (as an app's own directory would be small), or walking the checkout (.venv: ~14,000
    # files) overlaps the timed connects and is measured as connect cost.
    app_dir = os.path.join(tmp, "app")
    os.mkdir(app_dir)
    os.chdir(app_dir)
    os.chmod(tmp, 0o755)
    if shutil.which("gcc"):
        src = os.path.join(tmp, "connect.c")
        with open(src, "w") as f:
            f.write(C_APP)
        subprocess.run(["gcc", "-O2", "-o", os.path.join(tmp, "connect"), src], check=True)
        apps["c"] = [os.path.join(tmp, "connect")]
        src = os.path.join(tmp, "lifecycle.c")
        with open(src, "w") as f:
            f.write(C_LIFECYCLE)
        subprocess.run(["gcc", "-O2", "-o", os.path.join(tmp, "lifecycle"), src], check=True)
        apps["c-conn"] = [os.path.join(tmp, "lifecycle")]
    print(f"connect latency, {n} connects x {rounds} rounds, loopback, app as {'nobody' if user else 'self'}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    from garrison.defender.dataplane import native_available

    planes = ["python", "native"] if native_available()[0] else ["python"]
    full = os.path.exists(os.path.join(os.path.dirname(sys.executable), "garrison"))
    for name, argv in apps.items():
        res: dict[str, list[float]] = {"bare": []}
        for _ in range(rounds):  # interleaved so drift hits every mode alike
            a = [*argv, str(port), str(n)]
            res["bare"].append(run(a, False, user))
            for dp in planes:
                res.setdefault(f"guard runner, {dp}", []).append(run(a, True, user, dataplane=dp))
                if full:
                    res.setdefault(f"full defender, {dp}", []).append(run_defender(a, tmp, dp))
        goal = {"c": 2.5, "c-conn": 2.0}.get(name)
        if name != "python" and full:  # the C apps accept 0 connects (the start-up-only run)
            cpu = {
                "bare": statistics.median(
                    cpu_per_op(lambda a: run(a, False, user), argv, port, n) for _ in range(3)
                )
            }
            for dp in planes:
                cpu[dp] = statistics.median(
                    cpu_per_op(lambda a, dp=dp: run_defender(a, tmp, dp), argv, port, n) for _ in range(3)
                )
            print(
                f"  {name:6s} CPU    bare {cpu['bare']:6.1f} us | "
                + " | ".join(
                    f"full defender, {dp} {cpu[dp]:6.1f} us = {cpu[dp] / cpu['bare']:5.2f}x" for dp in planes
                )
                + " (app + defender CPU per connect, median of 3)"
            )
        # median and best round: on a shared machine the best round is the least disturbed one
        for label, agg in (("median", statistics.median), ("best", min)):
            b = agg(res["bare"])
            parts = [f"bare {b:6.1f} us"]
            for mode, vals in res.items():
                if mode != "bare":
                    parts.append(f"{mode} {agg(vals):6.1f} us = {agg(vals) / b:5.2f}x")
            print(f"  {name:6s} {label:6s} " + " | ".join(parts) + (f"   (goal <= {goal}x)" if goal else ""))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(tmp, ignore_errors=True)
    srv.kill()


if __name__ == "__main__":
    main()
