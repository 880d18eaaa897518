"""Learning overhead: connect latency with the network control in `learn` vs the same rule in `alert`.

Both modes run the guard under the real DefenderContext (forensic ring on disk, as in the full
defender); in learn mode the context also feeds the profile recorder (garrison/defender/profile.py),
and the rule's allow-list is not enforced (that is what is being learned). The rule: the 1,000-entry
deny list and bad-reputation list of bench/defender_connect.py plus an allow-list admitting the
peer. Rounds are interleaved (alert, learn, alert, learn, ...) on each data plane; prints median and
best round and the ratio learn/alert (goal <= 1.05). Usage:
    .venv/bin/python bench/defender_learn.py [N] [ROUNDS]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

from defender_connect import C_APP, PY_APP, RULE, server

from garrison.defender.context import DefenderContext
from garrison.defender.forensics import ForensicRing
from garrison.defender.net import TRAP_ONLY_IF_ARG_NONZERO, NetworkGuard
from garrison.defender.net.standalone import Supervised
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


def run(
    argv: list[str], effect: str, dataplane: str, user: tuple[int, int] | None, tmp: str
) -> tuple[float, int]:
    ring_dir = Path(tempfile.mkdtemp(dir=tmp))
    ctx = DefenderContext(Identity(app_name="bench"), "bench", probe(), ForensicRing(ring_dir, name="f"))
    ctx.profile = ProfileRecorder()
    ctx.set_policy(RuntimePolicy(rules=[rule(effect)]))
    guard = NetworkGuard(ctx, upstreams=[])
    ctx.profile.names_for = guard.pins.names_for
    guard.start()
    try:
        sup = Supervised(
            argv, guard.handlers, ctx, nonzero_arg=TRAP_ONLY_IF_ARG_NONZERO, user=user,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, dataplane=dataplane, guard=guard,
        )  # fmt: skip
        rc, out, err = sup.communicate(timeout=300)
        if rc != 0 or (guard.stats["emulated"] == 0 and sup.native is None):
            raise SystemExit(f"supervised run failed (rc={rc}, stats={guard.stats}): {err}")
        reports, _ = ctx.profile.take(full=True)
        counted = sum(d.count for r in reports for d in r.destinations)
        return float(out), counted
    finally:
        guard.stop()
        ctx.forensics.close()
        shutil.rmtree(ring_dir, ignore_errors=True)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    user = (65534, 65534) if os.geteuid() == 0 else None
    srv, port = server()
    tmp = tempfile.mkdtemp(prefix="garrison-bench-learn-")
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
            res: dict[str, list[float]] = {"alert": [], "learn": []}
            counted = 0
            for _ in range(rounds):
                a = [*argv, str(port), str(n)]
                res["alert"].append(run(a, "alert", dp, user, tmp)[0])
                us, counted = run(a, "learn", dp, user, tmp)
                res["learn"].append(us)
            for label, agg in (("median", statistics.median), ("best", min)):
                al, le = agg(res["alert"]), agg(res["learn"])
                print(
                    f"  {name:6s} {dp:6s} {label:6s} alert {al:7.1f} us | learn {le:7.1f} us = {le / al:5.3f}x"
                    f"   (goal <= 1.05x; connects counted in the last learn round: {counted})"
                )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(tmp, ignore_errors=True)
    srv.kill()


if __name__ == "__main__":
    main()
