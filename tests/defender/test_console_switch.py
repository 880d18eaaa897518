"""A data folder that holds another console's identity (console re-installed, app moved to another
foundation with a new bundle): the defender says so, sets the old identity, policy and unsent events
aside, enrols again with a new key, and never sends the old console's events to the new one; with no
usable policy it refuses (fail-closed) or, only when told, starts fail-open, with an audit either way.

Two real consoles (two data dirs, two CAs) and the real defender process."""

from __future__ import annotations

import base64
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.defender.helpers import Sandbox
from tests.defender.test_console import _audits, _put_rule, _vcap
from tests.fixtures.console import RunningConsole
from tests.polling import until as _wait

pytestmark = pytest.mark.slow

A_ERA = "a-era-marker"


def _defender_ids(console: RunningConsole, app: str) -> list[str]:
    with console.api() as c:
        r = c.get("/defenders", params={"app": app})
        r.raise_for_status()
        return [str(d["id"]) for d in r.json()]


def _snapshot(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copy2)


def _restore(snap: Path, data: Path) -> None:
    shutil.rmtree(data)
    shutil.copytree(snap, data, symlinks=True, copy_function=shutil.copy2)
    for p in [data, *data.rglob("*")]:
        shutil.chown(p, user=data.parent.owner(), group=data.parent.group())


def _bad_token(bundle: str) -> str:
    doc = json.loads(base64.b64decode(bundle))
    doc["enrolment_token"] = "not-a-valid-token"
    return base64.b64encode(json.dumps(doc).encode()).decode()


def test_defender_moved_to_another_console(console_factory: Any, sandbox: Sandbox) -> None:
    a: RunningConsole = console_factory()
    b: RunningConsole = console_factory()
    assert a.ca_pem != b.ca_pem
    app = f"switch-{uuid.uuid4().hex[:8]}"
    _put_rule(a, app, {"effect": "alert"})
    _put_rule(b, app, {"effect": "alert"})
    base_env = {"VCAP_APPLICATION": _vcap(app), "DEFENDER_DRAIN_TIMEOUT": "0.5"}
    env_a = {**base_env, "INSTALL_BUNDLE": a.install_bundle()}

    # enrolled with A and holding A's policy; then A is down and a run spools events meant for A
    r = sandbox.run(None, ["/bin/true"], env=env_a)
    assert r.returncode == 0, r.stderr
    ids_a = _wait(lambda: _defender_ids(a, app))
    assert ids_a
    key_a = (sandbox.data / "defender-key.pem").read_bytes()
    a.stop()
    r = sandbox.run(None, ["/bin/echo", A_ERA], env=env_a, defender_args=["--connect-timeout", "2"])
    assert r.returncode == 0 and "starting on the cached policy" in r.stderr, r.stderr
    snap = sandbox.root / "snapshot"
    _snapshot(sandbox.data, snap)

    # B's bundle whose token B refuses: no policy from B, A's cached policy is not B's → fail-closed
    env_b_bad = {**base_env, "INSTALL_BUNDLE": _bad_token(b.install_bundle())}
    r = sandbox.run(None, ["/bin/true"], env=env_b_bad, defender_args=["--connect-timeout", "3"])
    assert r.returncode == 69, r.stderr
    assert "issued by another console" in r.stderr and "FAIL-CLOSED" in r.stderr
    assert "was issued by another console" in r.stderr or "not used" in r.stderr
    assert "starting on the cached policy" not in r.stderr
    assert [e["control"] for e in r.of("defender")] == ["identity.foreign", "policy.fail_closed"]
    assert all(e["effect"] != "info" for e in r.audits)

    # ... or, only when the operator said so, fail-open with an audit saying so
    _restore(snap, sandbox.data)
    r = sandbox.run(
        None, ["/bin/true"], env=env_b_bad, defender_args=["--connect-timeout", "3", "--fail-open"]
    )
    assert r.returncode == 0, r.stderr
    assert "FAIL-OPEN" in r.stderr
    assert [e["control"] for e in r.of("defender")] == ["identity.foreign", "policy.fail_open"]

    # B's real bundle: re-enrols with B under a new key, A's state set aside, A's events never sent to B
    _restore(snap, sandbox.data)
    env_b = {**base_env, "INSTALL_BUNDLE": b.install_bundle()}
    r = sandbox.run(None, ["/bin/true"], env=env_b)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "issued by another console" in ln]
    assert len(lines) == 1 and "enrolling again with a new key" in lines[0], r.stderr
    assert _wait(lambda: _defender_ids(b, app))
    assert (sandbox.data / "defender-key.pem").read_bytes() != key_a
    aside = [p for p in sandbox.data.iterdir() if p.name.startswith("previous-console-")]
    assert len(aside) == 1
    assert (aside[0] / "defender-key.pem").read_bytes() == key_a
    assert (aside[0] / "event-spool.sqlite").exists() and (aside[0] / "policy-cache.json").exists()
    got = _wait(lambda: [e for e in _audits(b, app) if e.get("control") == "identity.foreign"])
    assert got and got[0]["severity"] == "high"
    seen = json.dumps(_wait(lambda: len(_audits(b, app, limit="500")) >= 3 and _audits(b, app, limit="500")))
    assert A_ERA not in seen  # the A-era run's audits stayed in the set-aside spool

    # the next start (same bundle) is a normal one: B's identity and B's cached policy
    r = sandbox.run(None, ["/bin/true"], env=env_b)
    assert r.returncode == 0 and "another console" not in r.stderr, r.stderr
    b.stop()
    r = sandbox.run(None, ["/bin/true"], env=env_b, defender_args=["--connect-timeout", "2"])
    assert r.returncode == 0 and "starting on the cached policy" in r.stderr, r.stderr
