"""Issue 18.8 in the browser: an incident's page shows the process tree a real defender's forensic
records rebuild — the app, the shell it started (the incident's process, highlighted) and what the
shell ran, with argv and exec/fork times — asked from the running defender through the console.

The defender is the real `garrison defender app-embedded`, enrolled with an install bundle from the
console under test, wrapping a real Python app as the unprivileged test user (default data plane)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.defender.helpers import Sandbox, as_nobody, unpriv_python
from tests.ui import test_browser
from tests.ui.test_browser import shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]
context, page = test_browser.context, test_browser.page  # the same signed-in page fixtures
APP = f"tree-{uuid.uuid4().hex[:6]}"
_TIME = re.compile(r"\d\d:\d\d:\d\d\.\d{3}$")
_FORKS = re.compile(r"^\u00d7[1-9]\d* · .*\d\d:\d\d:\d\d\.\d{3}")  # "(times)2 · Dec 2 10:38:02.604, ..."

# The app starts a shell (the rule alerts on shells) which runs echo; then a sibling that is not part of
# the shell's branch; then it stays up — so its defender stays connected — until the test says stop.
TREE_APP = """
import os, subprocess, time
quiet = {"stdout": subprocess.DEVNULL, "check": True}
subprocess.run(["/bin/sh", "-c", "/bin/echo from-the-shell; /bin/true"], **quiet)
subprocess.run(["/bin/echo", "sibling"], **quiet)
print("ready", os.getpid(), flush=True)
while not os.path.exists("stop"):
    time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def running_app(console: Any) -> Iterator[dict[str, Any]]:
    """The defended app, running, with its shell audit stored by the console."""
    pol = console.policy()
    rule = {
        "name": f"rule-{APP}",
        "scope": {"apps": [APP]},
        "processes": {"effect": "alert", "deny": ["/bin/sh", "/usr/bin/sh", "/usr/bin/dash", "/bin/dash"]},
    }
    console.put_policy({"rules": [rule, *pol.get("rules", [])]})
    sandbox = Sandbox(Path(tempfile.mkdtemp(prefix="garrison-ui-tree-"))).setup()
    sandbox.write("app.py", TREE_APP, mode=0o644)
    py, pyenv = unpriv_python()
    vcap = {"application_name": APP, "application_id": str(uuid.uuid4()), "organization_name": "acme",
            "space_name": "prod", "instance_index": 0}  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "HOME": str(sandbox.app), "DATA_FOLDER": str(sandbox.data),
           "INSTALL_BUNDLE": console.install_bundle(), "VCAP_APPLICATION": json.dumps(vcap), **pyenv}  # fmt: skip
    proc = subprocess.Popen(
        [*as_nobody(), py, "-m", "garrison", "defender", "app-embedded", "-q", py, "app.py"],
        cwd=sandbox.app, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:1] == ["ready"], proc.stderr.read() if proc.poll() is not None else line
        audit = _wait_for_audit(console)
        yield {"proc": proc, "sandbox": sandbox, "app_pid": int(line[1]), "audit": audit}
    finally:
        (sandbox.app / "stop").touch()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(sandbox.root, ignore_errors=True)


def _wait_for_audit(console: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with console.api() as c:
            got = c.get("/audits/runtime/app-embedded", params={"app": APP, "type": "process"}).json()
        if got:
            return dict(got[0])
        time.sleep(0.2)
    raise AssertionError("the shell's audit never reached the console")


def test_incident_page_shows_the_process_tree(
    page: Any, running_app: dict[str, Any], screenshots: Path
) -> None:
    from playwright.sync_api import expect

    audit = running_app["audit"]
    shell_pid, app_pid = audit["pid"], running_app["app_pid"]
    assert audit["effect"] == "alert" and shell_pid and audit["exe"].endswith("sh")

    page.goto("/incidents")
    row = page.locator("#incidents-table tbody tr", has_text=APP)
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(2).locator(".cell-sub")).to_have_text("acme / prod")
    row.locator("a").click()
    page.wait_for_url("**/incidents/view?id=*")
    expect(page.locator("#incident-title")).to_contain_text(APP)
    expect(page.locator("#incident-facts")).to_contain_text("acme / prod")
    expect(page.locator("#incident-audits tbody tr.audit")).to_have_count(1)
    expect(page.locator("#incident-audits tbody tr.audit")).to_have_attribute("aria-selected", "true")

    tree = page.locator("#tree")
    focus = tree.locator(".pnode.focus")
    expect(focus).to_have_count(1)
    expect(focus).to_have_attribute("data-pid", str(shell_pid))
    expect(focus.locator(".pill")).to_have_text("incident")
    shell = tree.locator(f"li.pproc:has(> .pnode[data-pid='{shell_pid}'])")
    # the shell's exec with its argv and time, the fork it made for echo, and echo's own exec below it
    expect(shell.locator("> ul.pfacts li.pexec code.argv").first).to_have_text(
        '/bin/sh -c "/bin/echo from-the-shell; /bin/true"'
    )
    expect(shell.locator("> ul.pfacts li.pexec time").first).to_have_text(_TIME)
    expect(shell.locator("> ul.pfacts li.pfork .when")).to_have_text(_FORKS)
    expect(shell.locator("> ul.ptree li.pexec code.argv", has_text="from-the-shell").first).to_be_visible()
    # its ancestor: the app itself (Python running app.py), which forked the shell
    app = tree.locator(f"li.pproc:has(> .pnode[data-pid='{app_pid}'])")
    expect(app.locator("> ul.pfacts li.pexec code.argv").first).to_contain_text("app.py")
    expect(app.locator("> ul.pfacts li.pfork .when")).to_have_text(_FORKS)
    expect(app.locator("> ul.ptree > li.pproc")).to_have_count(1)  # only the way down to the shell
    expect(tree).not_to_contain_text("sibling")
    shot(page, screenshots, "incident-tree")

    page.click("#tree-whole")  # the whole app: the sibling echo appears next to the shell
    expect(tree.locator("code.argv", has_text="echo sibling")).to_have_count(1)
    expect(tree.locator(".pnode.focus")).to_have_attribute("data-pid", str(shell_pid))
    shot(page, screenshots, "incident-tree-whole")

    # the app stops: its defender is gone, and the page says where the tree comes from
    proc = running_app["proc"]
    (running_app["sandbox"].app / "stop").touch()
    assert proc.wait(30) == 0, proc.stderr.read()
    note = page.locator("#tree-note")
    for _ in range(50):  # until the console has seen the channel close
        page.click("#tree-reload")
        expect(note).not_to_have_text("Asking the defender for its forensic records…")
        if "is not connected" in (note.text_content() or ""):
            break
        page.wait_for_timeout(200)
    expect(note).to_contain_text("is not connected")
