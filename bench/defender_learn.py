"""Learning overhead: connect latency with the network control in `learn` vs the same rule in `alert`.

Both modes run the guard under the real DefenderContext (forensic ring on disk, as in the full
defender); in learn mode the context also feeds the profile recorder (garrison/defender/profile.py),
and the rule's allow-list is not enforced (that is what is being learned). The rule: the 1,000-entry
deny list and bad-reputation list of bench/defender_connect.py plus an allow-list admitting the
peer. Rounds are interleaved (alert, learn, alert, learn, ...) on each data plane; prints median and
best round and the ratio learn/alert (goal <= 1.05), for latency and for CPU per connect (app +
guard threads: less disturbed by a loaded machine than wall time). On the native data plane the loop
counts learned destinations itself (NativeDataplane._feed_learned): Python gets counts per
destination, not one event per connect. Usage:
    .venv/bin/python bench/defender_learn.py [N] [ROUNDS]
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

from defender_connect import C_APP, PY_APP, RULE, server, supervise

from garrison.defender.context import DefenderContext
from garrison.defender.forensics import ForensicRing
from garrison.defender.profile import ProfileRecorder
from garrison.kernel.features import probe
from garrison.policy.model import Rule, RuntimePolicy
from garrison.policy.scope import Identity


def rule(effect: str) -> Rule:
    doc = RULE.model_dump(mode="json")
    doc["network"]["effect"] = effect
    doc["network"]["outbound"]["allow"] = ["127.0.0.0/8"]
    doc["dns"]["effect"] = "alert"
    return Rule.model_validate(doc)


def _cpu() -> float:
    """CPU seconds of this process (guard, recorder, drain threads) and its reaped children (the app)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


DRAIN_CPU = [0.0]  # the native record drain thread's CPU seconds in the last run (where learning counts)


def run(
    argv: list[str], effect: str, dataplane: str, user: tuple[int, int] | None, tmp: str
) -> tuple[float, float, int]:
    ring_dir = Path(tempfile.mkdtemp(dir=tmp))
    ctx = DefenderContext(Identity(app_name="bench"), "bench", probe(), ForensicRing(ring_dir, name="f"))
    ctx.profile = ProfileRecorder()
    ctx.set_policy(RuntimePolicy(rules=[rule(effect)]))
    recorder = ctx.profile
    cpu0 = _cpu()
    try:
        us, _guard = supervise(ctx, argv, user, dataplane, expect_emulated=argv[-1] != "0",
                               on_guard=lambda g: setattr(recorder, "names_for", g.pins.names_for))
        cpu = _cpu() - cpu0  # (the guard's threads have stopped: all their CPU is counted)
        reports, _ = recorder.take(full=True)
        counted = sum(d.count for r in reports for d in r.destinations)
        DRAIN_CPU[0] = ctx.dataplane.drain_cpu_s if ctx.dataplane is not None else 0.0
        return us, cpu, counted
    finally:
        ctx.forensics.close()
        shutil.rmtree(ring_dir, ignore_errors=True)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    user = (65534, 65534) if os.geteuid() == 0 else None
    srv, port = server()
    tmp = tempfile.mkdtemp(prefix="garrison-bench-learn-")
    # The defender captures the drift baseline of its working directory in the background; run it in
    # an empty one (as an app's own directory would be small), or walking the checkout (.venv: ~14,000
    # files) overlaps the timed connects and is measured as connect cost.
    app_dir = os.path.join(tmp, "app")
    os.mkdir(app_dir)
    os.chdir(app_dir)
    os.chmod(tmp, 0o755)
    apps: dict[str, list[str]] = {"python": ["/usr/bin/python3" if user else sys.executable, "-c", PY_APP]}
    if shutil.which("gcc"):
        src = os.path.join(tmp, "connect.c")
        Path(src).write_text(C_APP)
        subprocess.run(["gcc", "-O2", "-o", os.path.join(tmp, "connect"), src], check=True)
        apps["c"] = [os.path.join(tmp, "connect")]
    from garrison.defender.dataplane import native_available

    planes = ["python", "native"] if native_available()[0] else ["python"]
    print(f"learn vs alert, {n} connects x {rounds} rounds, loopback, app as {'nobody' if user else 'self'}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, argv in apps.items():
        for dp in planes:
            res: dict[str, list[float]] = {"alert": [], "learn": [], "alert cpu": [], "learn cpu": []}
            drain: dict[str, list[float]] = {"alert": [], "learn": []}
            counted = 0
            for _ in range(rounds):
                a = [*argv, str(port), str(n)]
                for mode in ("alert", "learn"):
                    us, cpu, got = run(a, mode, dp, user, tmp)
                    res[mode].append(us)
                    drain[mode].append(DRAIN_CPU[0] / n * 1e6)
                    # CPU per connect: minus a run of none (set-up and exit cancel)
                    cpu -= run([*argv, str(port), "0"], mode, dp, user, tmp)[1]
                    res[f"{mode} cpu"].append(cpu / n * 1e6)
                    counted = got if mode == "learn" else counted
            for label, agg in (("median", statistics.median), ("best", min)):
                parts = []
                for kind in ("", " cpu") if res["alert cpu"] else ("",):
                    al, le = agg(res["alert" + kind]), agg(res["learn" + kind])
                    what = "latency" if not kind else "CPU/op"
                    parts.append(f"{what} alert {al:7.1f} us, learn {le:7.1f} us = {le / al:5.3f}x")
                print(f"  {name:6s} {dp:6s} {label:6s} " + " | ".join(parts) + "   (goal <= 1.05x)")
            print(
                f"  {name:6s} {dp:6s} connects counted by the recorder in the last learn round: {counted}/{n}"
            )
            if dp == "native":  # learning's only extra work on this plane runs on the drain thread
                da, dl = statistics.median(drain["alert"]), statistics.median(drain["learn"])
                al = statistics.median(res["alert cpu"])
                print(f"  {name:6s} {dp:6s} record drain thread CPU per connect (median): alert {da:5.2f} us, "
                      f"learn {dl:5.2f} us: learning adds {dl - da:+5.2f} us = {(dl - da) / al * 100:+5.1f} % "
                      "of the alert CPU per connect")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(tmp, ignore_errors=True)
    srv.kill()


if __name__ == "__main__":
    main()
