"""The exec gate answered natively (garrison/kernel/_fanperm.c) from the verdict cache Python fills,
inside real runc containers: a cached answer must never outlive what it was decided on — the file's
path (hard links), its content (rewritten in place), the rule (a policy push) — and the loader run
directly stays refused although the loader itself is cached. Native answers are still audited and
recorded in the forensic trail."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from garrison.cell.exec_cache import SETTLE_S
from garrison.cell.forensics import ForensicLog
from garrison.kernel.fanotify import native_responder
from garrison.policy.model import RuntimePolicy
from tests.cell.conftest import LOADER, START_SH


def _policy(deny: list[str]) -> RuntimePolicy:
    return RuntimePolicy.model_validate({"rules": [
        {"name": "cell-rule", "processes": {"effect": "prevent", "deny": deny, "drift_prevention": True}}]})


def _refused(r: Any) -> bool:
    return r.returncode != 0 and "not permitted" in r.stderr.lower()


@pytest.fixture(autouse=True)
def _native_built() -> None:
    from garrison.kernel.fanotify import FanotifyPerm

    gate = FanotifyPerm(report_tid=True)
    try:
        responder, why = native_responder(gate)
    finally:
        gate.close()
    if responder is None:
        pytest.fail(f"the native responder must be built for the suite: {why}")


def test_cached_answers_follow_the_file_the_rule_and_the_pairing(garden: Any, defender: Any,
                                                                  tmp_path: Path) -> None:
    forensics = ForensicLog(tmp_path / "forensics")
    d, audits = defender(_policy(["wget"]), forensics=forensics)
    ev = audits.wait(lambda e: e.control == "cell.exec_responder")
    assert d.exec_responder == "native" and "natively" in ev.message
    c = garden()
    app = c.rootfs / "home/vcap/app/bin"
    c.stream_in("/home/vcap/app/bin/true", Path("/bin/busybox").read_bytes())  # the droplet
    os.link(app / "true", app / "wget")  # the same inode under a denied name (images have hard links)
    time.sleep(SETTLE_S + 0.2)  # cached only once its ctime has settled
    c.run_app(START_SH)
    audits.wait(lambda e: e.control == "cell.container_protected" and e.extra["container"] == c.id)

    for _ in range(3):
        assert c.exec("/home/vcap/app/bin/true").returncode == 0
        assert c.exec("/bin/dyn-true").returncode == 0  # program + interpreter, paired natively
    assert d.exec_stats()["answered"] >= 4, d.exec_stats()
    # same (device, inode, ctime) as the cached allowed file, another path: decided on its own path
    assert _refused(c.exec("/home/vcap/app/bin/wget"))
    audits.wait(lambda e: e.control == "processes.deny" and e.exe == "/home/vcap/app/bin/wget")
    # a denied program refused each time, and each refusal audited (native answers are reported)
    for _ in range(3):
        assert _refused(c.exec("/bin/wget", "-q", "-O", "-", "http://127.0.0.1:1/"))
    deadline = time.monotonic() + 10
    while sum(e.exe == "/bin/wget" for e in audits.events) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(e.exe == "/bin/wget" and e.effect == "prevent" for e in audits.events) == 3
    # the loader is cached as the paired interpreter; run directly it is still refused
    assert c.exec("/bin/cp", "/bin/dyn-true", "/tmp/dropped").returncode == 0
    assert _refused(c.exec(LOADER, "/tmp/dropped"))
    audits.wait(lambda e: e.type == "drift" and e.exe == "/tmp/dropped")
    # the cached droplet file rewritten in place: drift
    assert c.exec("/bin/sh", "-c", "cat /bin/sleep > /home/vcap/app/bin/true").returncode == 0
    assert _refused(c.exec("/home/vcap/app/bin/true"))
    audits.wait(lambda e: e.type == "drift" and e.exe == "/home/vcap/app/bin/true")
    # a policy push: the cached allow of /bin/dyn-true no longer holds
    d.set_policy(_policy(["wget", "dyn-true"]))
    assert _refused(c.exec("/bin/dyn-true"))
    # every exec answered natively is in the forensic trail with its layer and verdict
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        records = [json.loads(line) for line in forensics.path(c.id).read_text().splitlines()]
        files = [r for r in records if r["kind"] == "exec_file"]
        if sum(r["exe"] == "/bin/wget" for r in files) >= 3:
            break
        time.sleep(0.05)
    tools = [r for r in files if r["exe"] == "/home/vcap/app/bin/true"]
    assert [r["allowed"] for r in tools] == [True, True, True, False], tools
    assert tools[0]["layer"] == "upper-baseline"


def test_python_responder_on_request(garden: Any, defender: Any) -> None:
    d, audits = defender(_policy(["wget"]), exec_responder="python")
    ev = audits.wait(lambda e: e.control == "cell.exec_responder")
    assert d.exec_responder == "python" and "Python" in ev.message
    c = garden()
    c.run_app(START_SH)
    audits.wait(lambda e: e.control == "cell.container_protected" and e.extra["container"] == c.id)
    assert c.exec("/bin/true").returncode == 0
    assert _refused(c.exec("/bin/wget"))
    assert d.exec_stats() == {}


def test_learnt_execs_are_answered_and_counted_natively(garden: Any, defender: Any) -> None:
    """While the processes are learnt, a known file's exec is still answered by the native responder,
    which reads its argv and parent from the waiting thread and counts them (kernel/_fanperm.c,
    F_LEARN): the profile has every exec with its argv shape, as if Python had seen each."""
    d, audits = defender(RuntimePolicy.model_validate({"rules": [{"name": "learn", "processes": {"effect": "learn"}}]}))
    d.on_profile = lambda report: True  # a console link: the container learns
    c = garden()
    time.sleep(SETTLE_S + 0.2)  # cached only once the image's ctime has settled
    c.run_app(START_SH)
    audits.wait(lambda e: e.control == "cell.container_protected" and e.extra["container"] == c.id)
    deadline = time.monotonic() + 10
    while not any(tr.learner for tr in d._tracked.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.exec("/bin/true", "0").returncode == 0  # decided (and counted) in Python, then cached
    before = d.exec_stats()["answered"]
    for i in range(1, 6):
        assert c.exec("/bin/true", str(i)).returncode == 0
    assert c.exec("/bin/true", "--mode=fast", "z" * 200).returncode == 0
    assert d.exec_stats()["answered"] - before >= 6, d.exec_stats()  # none went to Python
    with d._lock:
        d._read_execs()
        (learner,) = [tr.learner for tr in d._tracked.values() if tr.learner is not None]
    (report,), _ = learner.recorder.take(full=True)
    seen = {tuple(p.argv_shape): p for p in report.processes if p.exe == "/bin/true"}
    assert seen[("<n>",)].count == 6  # one in Python, five natively: one item
    assert seen[("--mode=fast", "<long>")].count == 1
    assert seen[("<n>",)].parent == seen[("--mode=fast", "<long>")].parent
