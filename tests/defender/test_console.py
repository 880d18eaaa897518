"""The defender against a real console: enrol, policy, audits reaching the console, live policy
updates, starting on the cached policy while the console is down, and the spool delivering later."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from typing import Any

import pytest

from tests.defender.helpers import Sandbox, as_nobody, unpriv_python
from tests.fixtures.console import RunningConsole

pytestmark = pytest.mark.slow


def _vcap(name: str) -> str:
    return json.dumps(
        {
            "application_name": name,
            "application_id": str(uuid.uuid4()),
            "organization_name": "org-e2e",
            "space_name": "space-e2e",
            "instance_index": 0,
        }
    )


def _put_rule(console: RunningConsole, app: str, processes: dict[str, Any]) -> None:
    pol = console.policy()
    rules = [r for r in pol.get("rules", []) if r["name"] != f"rule-{app}"]
    rules.insert(0, {"name": f"rule-{app}", "scope": {"apps": [app]}, "processes": processes})
    console.put_policy({"rules": rules})


def _audits(console: RunningConsole, app: str, **params: str) -> list[dict[str, Any]]:
    with console.api() as c:
        r = c.get("/audits/runtime/app-embedded", params={"app": app, **params})
        r.raise_for_status()
        return list(r.json())


def _wait_audits(
    console: RunningConsole, app: str, timeout: float = 20, **params: str
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        got = _audits(console, app, **params)
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


SHELL_APP = """
import subprocess
try:
    subprocess.run(["/bin/sh", "-c", "true"])
    print("ran")
except PermissionError:
    print("refused")
"""


def test_audits_reach_the_console_and_cached_policy_survives_an_outage(
    console_factory: Any, sandbox: Sandbox
) -> None:
    console: RunningConsole = console_factory()
    app = f"e2e-{uuid.uuid4().hex[:8]}"
    _put_rule(console, app, {"effect": "prevent", "deny": ["/bin/sh", "/usr/bin/dash", "/usr/bin/sh"]})
    py, _ = unpriv_python()
    sandbox.write("app.py", SHELL_APP, mode=0o644)
    env = {"INSTALL_BUNDLE": console.install_bundle(), "VCAP_APPLICATION": _vcap(app), "DEFENDER_TYPE": "cf"}
    r = sandbox.run(None, [py, "app.py"], env=env)
    assert r.returncode == 0, r.stderr
    assert "refused" in r.stdout
    got = _wait_audits(console, app, type="process")
    assert got and got[0]["effect"] == "prevent" and got[0]["org"] == "org-e2e"
    assert got[0]["rule"] == f"rule-{app}" and got[0]["exe"] == "/usr/bin/dash"
    assert (sandbox.data / "policy-cache.json").exists()

    console.stop()  # console away: start on the cached policy, spool the audits
    r = sandbox.run(
        None,
        [py, "app.py"],
        env={**env, "DEFENDER_DRAIN_TIMEOUT": "0.5"},
        defender_args=["--connect-timeout", "2"],
    )
    assert r.returncode == 0, r.stderr
    assert "starting on the cached policy" in r.stderr
    assert "refused" in r.stdout

    # back on the same ports (the bundle names them): the spooled audits are delivered by the next run
    console.args = (*console.args, "--port", str(console.port), "--defender-port", str(console.defender_port))
    console.start()
    r = sandbox.run(None, ["/bin/true"], env=env)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 20
    while len(_audits(console, app, type="process")) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(_audits(console, app, type="process")) == 2


def test_unreachable_console_without_cache_refuses(sandbox: Sandbox, console: RunningConsole) -> None:
    bundle = console.install_bundle()
    import base64

    doc = json.loads(base64.b64decode(bundle))
    doc["ws_address"] = "wss://127.0.0.1:9"  # nothing listens on the discard port
    env = {
        "INSTALL_BUNDLE": base64.b64encode(json.dumps(doc).encode()).decode(),
        "DEFENDER_DRAIN_TIMEOUT": "0",
    }
    r = sandbox.run(None, ["/bin/true"], env=env, defender_args=["--connect-timeout", "1"])
    assert r.returncode == 69, r.stderr
    assert "console unreachable" in r.stderr and "refusing to start" in r.stderr

    (sandbox.data / "policy-cache.json").write_text("{not json")
    r = sandbox.run(None, ["/bin/true"], env=env, defender_args=["--connect-timeout", "1"])
    assert r.returncode == 78 and "corrupt" in r.stderr

    (sandbox.data / "policy-cache.json").unlink()
    r = sandbox.run(None, ["/bin/true"], env=env, defender_args=["--connect-timeout", "1", "--fail-open"])
    assert r.returncode == 0 and "FAIL-OPEN" in r.stderr


def test_live_policy_update_without_restart(console: RunningConsole, sandbox: Sandbox) -> None:
    app = f"live-{uuid.uuid4().hex[:8]}"
    _put_rule(console, app, {"effect": "alert"})
    py, pyenv = unpriv_python()
    sandbox.write(
        "loop.py",
        """
import subprocess, sys, time
for i in range(600):
    try:
        subprocess.run(["/bin/echo", "tick"], stdout=subprocess.DEVNULL)
        print("ran", flush=True)
    except PermissionError:
        print("refused", flush=True)
        break
    time.sleep(0.05)
""",
        mode=0o644,
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DATA_FOLDER": str(sandbox.data),
        "INSTALL_BUNDLE": console.install_bundle(),
        "VCAP_APPLICATION": _vcap(app),
        **pyenv,
    }
    p = subprocess.Popen(
        [*as_nobody(), py, "-m", "garrison", "defender", "app-embedded", "-q", py, "loop.py"],
        cwd=sandbox.app,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ran"
        _put_rule(console, app, {"effect": "prevent", "deny": ["*/echo"]})
        lines = []
        for line in p.stdout:
            lines.append(line.strip())
            if line.strip() == "refused":
                break
        assert lines[-1] == "refused", lines[-5:]
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
