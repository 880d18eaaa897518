"""The real defender process (`garrison defender app-embedded`) with an install bundle listing two
real console replicas on one real PostgreSQL, no load balancer: the replica it is connected to is
SIGKILLed while the app runs; the defender moves to the other replica by itself, every exec audit the
app caused is stored exactly once, and a policy changed on the surviving replica reaches it."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest

from garrison.channel.bundle import decode_bundle
from tests.console.test_replicas import WAIT_S, Pair, _kill, pair  # noqa: F401  (pair: the fixture)
from tests.defender.helpers import Sandbox, as_nobody, unpriv_python
from tests.defender.test_console import _put_rule, _vcap
from tests.polling import until

pytestmark = pytest.mark.slow

LOOP = """
import subprocess, time
for i in range(3000):
    try:
        subprocess.run(["/bin/echo", f"tick-{i}"], stdout=subprocess.DEVNULL)
        print(f"ran {i}", flush=True)
    except PermissionError:
        print("refused", flush=True)
        break
    time.sleep(0.05)
"""


def _ticks(replicas: Pair, app: str) -> Counter[int]:
    rows = replicas.sql("SELECT body::text FROM events WHERE app_name = %s AND type = 'process'", app)
    return Counter(int(m) for (body,) in rows for m in re.findall(r"tick-(\d+)", body)[:1])


def _held_by(replicas: Pair, app: str) -> set[str]:
    """The replicas holding this app's connected defenders."""
    return {d["replica_id"] for d in replicas.defenders().values() if d["app_name"] == app and d["connected"]}


def test_real_defender_fails_over_to_the_other_replica(pair: Pair, sandbox: Sandbox) -> None:  # noqa: F811
    app = f"failover-{uuid.uuid4().hex[:8]}"
    _put_rule(pair.a, app, {"effect": "alert", "deny": ["*/echo"]})  # every exec of echo: an audit
    bundle = pair.a.install_bundle()
    assert len(decode_bundle(bundle).ws_addresses) == 2
    sandbox.write("loop.py", LOOP, mode=0o644)
    py, pyenv = unpriv_python()
    env = {
        "PATH": "/usr/bin:/bin",
        "DATA_FOLDER": str(sandbox.data),
        "INSTALL_BUNDLE": bundle,
        "VCAP_APPLICATION": _vcap(app),
        **pyenv,
    }
    p = subprocess.Popen(
        [*as_nobody(), py, "-m", "garrison", "defender", "app-embedded", "-q", py, "loop.py"],
        cwd=sandbox.app,
        env=env,
        stdout=subprocess.PIPE,
        stderr=open(Path(sandbox.root) / "defender.err", "w"),  # noqa: SIM115
        text=True,
    )
    ran: list[int] = []
    try:
        assert p.stdout is not None
        ra, rb = pair.replica_id(pair.a), pair.replica_id(pair.b)
        until(lambda: _held_by(pair, app) == {ra}, WAIT_S, "the defender connected to A (its primary)")
        until(lambda: sum(_ticks(pair, app).values()) >= 20, WAIT_S, "some audits stored through A")
        _kill(pair.a)
        until(lambda: _held_by(pair, app) == {rb}, WAIT_S, "the defender connected to B (only)")
        _put_rule(pair.b, app, {"effect": "prevent", "deny": ["*/echo"]})
        for line in p.stdout:
            if line.startswith("ran "):
                ran.append(int(line.split()[1]))
            if line.strip() == "refused":
                break
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert ran and ran == list(range(len(ran)))
    # every exec the app made is stored once: nothing lost across the kill, nothing twice
    until(lambda: set(_ticks(pair, app)) >= set(ran), WAIT_S, "every exec audit stored")
    ticks = _ticks(pair, app)
    assert {i: n for i, n in ticks.items() if n != 1} == {}
    assert set(ran) <= set(ticks) <= set(ran) | {len(ran)}  # + the refused exec
