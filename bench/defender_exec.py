"""fork+exec+wait cost under the defender, as a ratio against bare, measured in the same run.

A small C loop (fork, execve /bin/true, waitpid) prints microseconds per operation; it runs bare, under
the defender with an allow-all policy, with drift prevention (Landlock), and with a prevent deny list
(which switches the ptrace exec stop on, as does a host without Landlock), and with a deny list matched
by identity (`@shells`: the files' contents) plus the fork-bomb guard (the app tree counted per fork),
each on both data planes (DEFENDER_DATAPLANE=python|native). Goals: ≤ 1.15x allow-all/Landlock,
≤ 1.35x with the ptrace stop. Besides wall time it prints CPU per op twice: app + defender of a run
of n minus a run of none, and "loop CPU": the app, its children and every defender thread
(/proc/<defender>/task/*/schedstat) while the loop ran -- no start-up in it, steadier under load --
and how many seccomp notifications and ptrace stops the app waited for per op (the defender's exit
audit): each is a round trip through a defender thread, the part of the cost no table makes cheaper.

    .venv/bin/python bench/defender_exec.py [--n 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

C_LOOP = r"""
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
/* CPU ns of the supervising process (every thread: /proc/<ppid>/task/<tid>/schedstat) */
static double sup_cpu(void) {
    char path[128];
    snprintf(path, sizeof path, "/proc/%d/task", getppid());
    DIR *d = opendir(path);
    double tot = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        unsigned long long run;
        snprintf(path, sizeof path, "/proc/%d/task/%s/schedstat", getppid(), e->d_name);
        FILE *f = e->d_name[0] == '.' ? NULL : fopen(path, "r");
        if (f && fscanf(f, "%llu", &run) == 1) tot += run;
        if (f) fclose(f);
    }
    if (d) closedir(d);
    return tot;
}
static double own_cpu(void) { /* this process and its reaped children */
    struct rusage a, b;
    getrusage(RUSAGE_SELF, &a); getrusage(RUSAGE_CHILDREN, &b);
    return (a.ru_utime.tv_sec + b.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_stime.tv_sec) * 1e9 +
           (a.ru_utime.tv_usec + b.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_stime.tv_usec) * 1e3;
}
int main(int argc, char **argv) {
    int n = atoi(argv[1]), sup = argc > 2;
    char *args[] = {"true", NULL}; char *env[] = {NULL};
    struct timespec a, b;
    double s0 = sup ? sup_cpu() : 0, c0 = own_cpu();
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) { execve("/bin/true", args, env); _exit(127); }
        int st; waitpid(p, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { fprintf(stderr, "child failed\n"); return 1; }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s1 = sup ? sup_cpu() : 0, c1 = own_cpu();
    printf("%.1f %.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / n,
           (c1 - c0 + s1 - s0) / 1e3 / (n ? n : 1));
    return 0;
}
"""

DEFENDER = [sys.executable, "-m", "garrison", "defender", "app-embedded", "-q"]


def build(tmp: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        sys.exit("a C compiler is needed for this benchmark")
    src = tmp / "loop.c"
    src.write_text(C_LOOP)
    exe = tmp / "loop"
    subprocess.run([gcc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def measure(cmd: list[str], env: dict[str, str], cwd: str | None = None) -> tuple[float, float, float]:
    """(µs per op as the app timed it, CPU µs per op of app + children + defender while the loop ran,
    CPU seconds used by the whole process tree)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, cwd=cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    wall, loop_cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(loop_cpu), cpu


def cpu_per_op(cmd: list[str], env: dict[str, str], n: int, cwd: str | None = None) -> float:
    """CPU µs per op of app + defender together: a run of n ops minus a run of none (start-up and
    exit cost cancel). Unlike wall time this does not depend on how the scheduler shares a loaded
    machine (a task that sleeps in the supervisor is woken ahead of busy ones; a busy loop is not)."""
    _, _, full = measure(cmd, env, cwd)
    _, _, empty = measure([*cmd[:-2], "0", cmd[-1]] if cmd[-1] == "sup" else [*cmd[:-1], "0"], env, cwd)
    return (full - empty) / n * 1e6


def trapped_per_op(data: Path, n: int) -> tuple[float, float]:
    """(seccomp notifications, ptrace stops) per op of the run that just ended, from the defender's
    exit audit (what the app waited for: each is a round trip through a defender thread)."""
    audits = (data / "garrison-audit.jsonl").read_text().splitlines()
    last = next(json.loads(a) for a in reversed(audits) if '"control":"exit"' in a.replace(" ", ""))
    extra = last["extra"]
    native = extra.get("native")
    counters = native if native is not None else {"received": extra.get("notifications", 0), **extra}
    return counters.get("received", 0) / n, counters.get("stops", 0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        exe = build(tmp)
        allow = tmp / "allow.json"
        allow.write_text(json.dumps({"rules": [{"name": "allow-all"}]}))
        drift = tmp / "drift.json"
        drift.write_text(
            json.dumps(
                {"rules": [{"name": "drift", "processes": {"effect": "prevent", "drift_prevention": True}}]}
            )
        )
        strict = tmp / "strict.json"
        strict.write_text(
            json.dumps(
                {
                    "rules": [
                        {
                            "name": "strict",
                            "processes": {
                                "effect": "prevent",
                                "deny": ["nc", "*/ncat"],
                                "drift_prevention": True,
                            },
                        }
                    ]
                }
            )
        )
        guarded = tmp / "guarded.json"
        guarded.write_text(
            json.dumps(
                {
                    "rules": [
                        {
                            "name": "guarded",
                            "processes": {
                                "effect": "prevent",
                                "deny": ["@shells", "@netcat", "curl"],
                                "fork_bomb_guard": {"max_procs": 512, "max_forks_per_s": 100000},
                            },
                        }
                    ]
                }
            )
        )
        base_env = {**os.environ, "DATA_FOLDER": str(tmp)}
        from garrison.defender.dataplane import native_available

        planes = ["python", "native"] if native_available()[0] else ["python"]
        variants: dict[str, tuple[list[str], dict[str, str]]] = {"bare": ([str(exe), str(a.n)], base_env)}
        for label, pol in (
            ("allow-all", allow),
            ("drift prevent (Landlock)", drift),
            ("deny list + drift (ptrace stop)", strict),
            ("deny by identity + fork guard (ptrace stop)", guarded),
        ):
            for plane in planes:
                variants[f"{label}, {plane}"] = (
                    [*DEFENDER, "--policy", str(pol), str(exe), str(a.n), "sup"],
                    {**base_env, "DEFENDER_DATAPLANE": plane},
                )
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        results: dict[str, list[float]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        loop_cpu: dict[str, list[float]] = {k: [] for k in variants}
        trapped: dict[str, tuple[float, float]] = {}
        for _ in range(a.rounds):  # interleaved so machine noise hits every variant alike
            for name, (cmd, env) in variants.items():
                # run in the temporary directory: the defender captures the drift baseline of its
                # working directory (in the background under allow-all), which must not be this checkout
                wall, in_loop, _ = measure(cmd, env, d)
                if name != "bare":
                    trapped[name] = trapped_per_op(tmp, a.n)
                results[name].append(wall)
                loop_cpu[name].append(in_loop)
                cpu[name].append(cpu_per_op(cmd, env, a.n, d))
    bare_med = statistics.median(results["bare"])
    bare_min = min(results["bare"])
    print(f"fork+exec+wait of /bin/true, {a.n} per run, {a.rounds} interleaved rounds")
    print("  (min = least disturbed by other load on the machine; both ratios are against bare)")
    print("  CPU: app + defender per op, a run of n minus a run of none; loop CPU: app, its children and")
    print("  every defender thread while the loop ran (no start-up in it: the steadier figure under load)")
    bare_cpu = statistics.median(cpu["bare"])
    bare_loop = statistics.median(loop_cpu["bare"])
    for name, vals in results.items():
        med, lo = statistics.median(vals), min(vals)
        c, lc = statistics.median(cpu[name]), statistics.median(loop_cpu[name])
        print(
            f"  {name:36s} wall median {med:7.1f} µs/op ({med / bare_med:4.2f}x)"
            f"  min {lo:7.1f} µs/op ({lo / bare_min:4.2f}x)  |  CPU {c:7.1f} µs/op ({c / bare_cpu:4.2f}x)"
            f"  |  loop CPU {lc:7.1f} µs/op ({lc / bare_loop:4.2f}x)"
        )
        if name in trapped:
            notes, stops = trapped[name]
            print(f"  {'':36s} per op: {notes:.2f} seccomp notifications, {stops:.2f} ptrace stops")
    print("goals: ≤ 1.15x allow-all and Landlock, ≤ 1.35x with the ptrace exec stop")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
