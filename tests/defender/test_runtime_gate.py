"""Issue 5's run-time gate through the real console: a droplet whose assurance scan failed does not run
where the assurance policy's runtime effect is `prevent`; a passing (or alert-only) droplet runs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.defender.helpers import Sandbox, unpriv_python
from tests.defender.test_console import _vcap, _wait_audits
from tests.fixtures.console import RunningConsole

pytestmark = pytest.mark.slow


def _report(console: RunningConsole, digest: str, app: str, verdict: str) -> None:
    with console.api() as c:
        body = {
            "digest": digest,
            "verdict": verdict,
            "app_name": app,
            "reasons": ["2 critical vulnerabilities"],
        }
        c.post("/scans", json=body).raise_for_status()


def _assurance(console: RunningConsole, effect: str) -> None:
    with console.api() as c:
        current = c.get("/policies/assurance").json()
        current.pop("revision", None)
        current["runtime_effect"] = effect
        c.put("/policies/assurance", json=current).raise_for_status()


def test_failed_droplet_is_refused_and_passing_one_runs(console_factory: Any, sandbox: Sandbox) -> None:
    console: RunningConsole = console_factory()
    app = f"gate-{uuid.uuid4().hex[:8]}"
    bad, good = "sha256:" + "b" * 64, "sha256:" + "a" * 64
    _report(console, bad, app, "fail")
    _report(console, good, app, "pass")
    _assurance(console, "prevent")
    py, _ = unpriv_python()
    sandbox.write("app.py", "print('app ran')\n", mode=0o644)
    base = {"INSTALL_BUNDLE": console.install_bundle(), "VCAP_APPLICATION": _vcap(app)}

    refused = sandbox.run(None, [py, "app.py"], env={**base, "GARRISON_DROPLET_DIGEST": bad})
    assert refused.returncode == 126, refused.stderr
    assert "app ran" not in refused.stdout and "non-compliant" in refused.stderr
    got = _wait_audits(console, app, type="assurance")
    assert got and got[0]["effect"] == "prevent"

    ran = sandbox.run(None, [py, "app.py"], env={**base, "GARRISON_DROPLET_DIGEST": good})
    assert ran.returncode == 0 and "app ran" in ran.stdout, ran.stderr

    _assurance(console, "alert")
    alerted = sandbox.run(None, [py, "app.py"], env={**base, "GARRISON_DROPLET_DIGEST": bad})
    assert alerted.returncode == 0 and "app ran" in alerted.stdout, alerted.stderr
