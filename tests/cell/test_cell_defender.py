"""The cell defender against real runc containers: denied programs, drift, alert mode, fork bombs,
containers appearing and disappearing — enforced from outside the containers, no app change."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from garrison.policy.model import RuntimePolicy
from tests.cell.conftest import START_SH, started_app


def _policy(effect: str = "prevent", **processes: Any) -> RuntimePolicy:
    return RuntimePolicy.model_validate({"rules": [
        {"name": "other-apps", "scope": {"apps": ["billing"]}, "processes": {"effect": "disable"}},
        {"name": "cell-rule", "scope": {"orgs": ["acme"]},
         "processes": {"effect": effect, "deny": ["wget", "nc"], "drift_prevention": True, **processes}},
    ]})


def test_denied_program_refused_in_kernel_with_audit(garden: Any, defender: Any) -> None:
    _d, audits = defender(_policy())
    c = started_app(garden, audits)
    denied = c.exec("/bin/wget", "--help")
    assert denied.returncode != 0 and "not permitted" in denied.stderr.lower()
    ev = audits.wait(lambda e: e.type == "process" and e.exe == "/bin/wget")
    assert ev.effect == "prevent" and ev.control == "processes.deny" and ev.rule == "cell-rule"
    assert (ev.app_name, ev.org, ev.space, ev.app_id) == ("shop", "acme", "prod", "shop-guid")
    assert ev.pid and ev.extra["container"] == c.id
    ok = c.exec("/bin/echo", "fine")
    assert ok.returncode == 0 and ok.stdout.strip() == "fine"
    # a child of the app (the shell execs it; `exec` keeps busybox sh from running its own applet)
    nc_via_shell = c.exec("/bin/sh", "-c", "exec /bin/nc -h")
    assert nc_via_shell.returncode != 0 and "not permitted" in nc_via_shell.stderr.lower()
    audits.wait(lambda e: e.exe == "/bin/nc" and e.effect == "prevent")


def test_drift_written_after_start_refused_droplet_allowed(garden: Any, defender: Any) -> None:
    _d, audits = defender(_policy())
    c = started_app(garden, audits)
    assert c.exec("/home/vcap/app/bin/true").returncode == 0  # droplet: baseline
    assert c.exec("/bin/cp", "/bin/ls", "/tmp/dropped").returncode == 0
    dropped = c.exec("/tmp/dropped")
    assert dropped.returncode != 0
    ev = audits.wait(lambda e: e.type == "drift" and e.exe == "/tmp/dropped")
    assert ev.effect == "prevent" and ev.extra["layer"] == "upper-new"
    # a rootfs binary modified in place (copied up into the upper layer) is drift too
    assert c.exec("/bin/sh", "-c", "cat /bin/true > /tmp/t; cp /tmp/t /bin/echo").returncode == 0
    assert c.exec("/bin/echo", "x").returncode != 0
    audits.wait(lambda e: e.type == "drift" and e.exe == "/bin/echo")
    # a droplet file rewritten after start is drift as well
    assert c.exec("/bin/cp", "/bin/ls", "/home/vcap/app/bin/true").returncode == 0
    assert c.exec("/home/vcap/app/bin/true").returncode != 0
    audits.wait(lambda e: e.type == "drift" and e.exe == "/home/vcap/app/bin/true")


def test_alert_mode_audits_and_lets_run(garden: Any, defender: Any) -> None:
    _d, audits = defender(_policy(effect="alert"))
    c = started_app(garden, audits)
    assert c.exec("/bin/wget", "--help").returncode in (0, 1)  # ran (busybox prints usage)
    ev = audits.wait(lambda e: e.exe == "/bin/wget")
    assert ev.effect == "alert"


def test_rule_scope_other_app_not_enforced(garden: Any, defender: Any) -> None:
    _d, audits = defender(_policy())
    c = started_app(garden, audits, app="billing")
    assert c.exec("/bin/wget", "--help").returncode in (0, 1)
    time.sleep(0.3)
    assert not [e for e in audits.events if e.exe == "/bin/wget"]


def test_fork_bomb_capped_by_pids_cgroup_with_audit(garden: Any, defender: Any) -> None:
    _d, audits = defender(_policy(fork_bomb_guard={"max_procs": 20, "max_forks_per_s": 1000}))
    c = started_app(garden, audits)
    bomb = c.exec("/bin/sh", "-c", "for i in $(seq 60); do sleep 3 & done; wait", timeout=60)
    assert "can't fork" in bomb.stderr.lower() or "resource temporarily unavailable" in bomb.stderr.lower() \
        or bomb.returncode != 0
    ev = audits.wait(lambda e: e.type == "fork_bomb")
    assert ev.effect == "prevent" and "pids.max" in ev.message and ev.app_name == "shop"


def test_containers_appear_and_disappear(garden: Any, defender: Any) -> None:
    d, audits = defender(_policy())
    c = started_app(garden, audits, app="cart", index=3)
    assert any(x.id == c.id and x.identity and x.identity.instance == 3 for x in d.containers())
    c.delete()
    audits.wait(lambda e: e.control == "cell.container_gone" and e.extra["container"] == c.id, timeout=5)
    assert all(x.id != c.id for x in d.containers())


def test_cli_runs_and_writes_audits(garden: Any, runc_root: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(_policy().model_dump_json())
    log = tmp_path / "audits.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "garrison", "defender", "cell", "--policy", str(policy),
                             "--runc-root", str(runc_root), "--audit-log", str(log), "--duration", "60"],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "garrison cell defender: watching" in proc.stderr.readline()  # type: ignore[union-attr]
        c = garden(app="api")
        c.run_app(START_SH)
        deadline = time.monotonic() + 15
        while "container_protected" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert c.exec("/bin/wget", "--help").returncode != 0
        deadline = time.monotonic() + 10
        while '"processes.deny"' not in log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(20)
    assert proc.returncode == 0


def test_privileges_garden_container_clean_privileged_flagged(garden: Any, defender: Any) -> None:
    _d, audits = defender(_policy())
    plain = started_app(garden, audits, app="plain")
    priv = started_app(garden, audits, app="root-app", privileged=True)
    ev = audits.wait(lambda e: e.type == "privileges" and e.extra["container"] == priv.id)
    assert ev.effect == "alert" and "runs privileged" in ev.message and ev.app_name == "root-app"
    time.sleep(0.3)
    assert not [e for e in audits.events if e.type == "privileges" and e.extra["container"] == plain.id]
    assert priv.exec("/bin/echo", "still running").returncode == 0  # alert: nothing stopped


def test_privileges_prevent_stops_a_container_sharing_the_cell_pid_namespace(garden: Any, defender: Any) -> None:
    policy = _policy()
    policy.rules[1].privileges.effect = "prevent"
    _d, audits = defender(policy)
    c = garden(app="hostpid", host_pid=True, privileged=True)  # procfs of the cell needs its root
    c.run_app(START_SH)
    ev = audits.wait(lambda e: e.type == "privileges" and "PID namespace" in e.message)
    assert ev.effect == "prevent" and "stopped" in ev.message
    deadline = time.monotonic() + 10
    while c.exec("/bin/true").returncode == 0:
        assert time.monotonic() < deadline, "the container kept running"
        time.sleep(0.2)


def test_cli_refuses_a_bad_policy_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "policy.json"
    bad.write_text('{"rules": [{"name": "x", "processes": {"effect": "maybe"}}]}')
    proc = subprocess.run([sys.executable, "-m", "garrison", "defender", "cell", "--policy", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "policy file" in proc.stderr and "effect" in proc.stderr


def _rate_policy(effect: str) -> RuntimePolicy:
    return _policy(effect=effect, fork_bomb_guard={"max_procs": 100, "max_forks_per_s": 40})


def test_fork_bomb_rate_guard_kills_the_burst_and_spares_the_app(garden: Any, defender: Any) -> None:
    """A classic fork bomb: capped by pids.max, and the fork rate from the proc connector gets the
    burst's processes killed with the container frozen; the app goes on."""
    _d, audits = defender(_rate_policy("prevent"))
    c = started_app(garden, audits)
    bomb = subprocess.Popen(["runc", "--root", str(c.runc_root), "exec", *c._env(), c.id, "/bin/sh", "-c",
                             "bomb() { bomb | bomb & }; bomb; sleep 30"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ev = audits.wait(lambda e: e.type == "fork_bomb" and "fork rate" in e.message, timeout=90)
        assert ev.effect == "prevent" and ev.extra["killed"] > 0 and ev.extra["offenders"]
        assert ev.control == "processes.fork_bomb_guard" and ev.app_name == "shop"
        pids_dir = Path("/sys/fs/cgroup/pids/garden") / c.id
        deadline = time.monotonic() + 90  # bounds, not timings: the suite runs on a loaded 2-core box
        while int((pids_dir / "pids.current").read_text()) > 10:  # the bomb is gone
            assert time.monotonic() < deadline, [(e.type, e.message) for e in audits.events]
            time.sleep(0.2)
        ok = c.exec("/bin/echo", "app alive")
        assert ok.returncode == 0 and ok.stdout.strip() == "app alive"
        assert audits.defender is not None
        app = next(x for x in audits.defender.containers() if x.id == c.id)
        assert app.app_pid and Path(f"/proc/{app.app_pid}").exists()  # the app's own process spared
    finally:
        bomb.kill()
        bomb.wait()


def test_fork_rate_alert_audits_and_kills_nothing(garden: Any, defender: Any) -> None:
    _d, audits = defender(_rate_policy("alert"))
    c = started_app(garden, audits)
    r = c.exec("/bin/sh", "-c", "for i in $(seq 80); do sleep 2 & done; wait", timeout=60)
    assert r.returncode == 0
    ev = audits.wait(lambda e: e.type == "fork_bomb" and "fork rate" in e.message)
    assert ev.effect == "alert" and ev.extra["killed"] == 0 and ev.extra["forks_last_second"] > 40
