"""Issue 9.6: slow fork bombs and silent limits. The guard counts the live processes of the app tree
on every fork (an upper bound, counted for real only at the cap) and enforces max_procs for root too;
every refused fork is audited, also when the kernel's RLIMIT_NPROC is what refuses it. Exited
children free their slots; orphans re-parented to the defender still count."""

from __future__ import annotations

import os

import pytest

from garrison.defender.proctree import AppTree, nproc_limit
from garrison.policy.evaluate import decide_fork
from garrison.policy.model import RuntimePolicy
from tests.defender.helpers import Sandbox, rule, unpriv_python

BOMBS = r"""
import os, sys, time
kind, n, per_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
kids, refused = [], 0
for i in range(n):
    time.sleep(1 / per_s)  # slow: far below the rate limit
    try:
        if kind == "spawn":  # vfork + exec of a long-lived program
            kids.append(os.posix_spawn("/bin/sleep", ["sleep", "20"], {}))
            continue
        pid = os.fork()
    except OSError as e:
        refused += 1
        continue
    if pid == 0:
        try:
            if kind == "orphan":
                if os.fork():  # the parent leaves: its child goes to the defender
                    os._exit(0)
                with open("orphans", "a") as f:
                    f.write(f"{os.getpid()}\n")
            time.sleep(20)
        finally:
            os._exit(0)
    kids.append(pid)
    if kind == "orphan":
        os.waitpid(pid, 0)
if kind == "orphan":  # the refused forks are the children's: count the orphans that started
    time.sleep(0.5)
    orphans = open("orphans").read().split() if os.path.exists("orphans") else []
    print("forked", len(orphans), "refused", n - len(orphans), flush=True)
    for o in orphans:
        os.kill(int(o), 9)
else:
    print("forked", len(kids), "refused", refused, flush=True)
for k in kids:
    try:
        os.kill(k, 9)
    except OSError:
        pass
"""


@pytest.mark.parametrize("kind", ["fork", "spawn", "orphan"])
@pytest.mark.parametrize("effect", ["alert", "prevent"])
def test_slow_fork_bomb_is_capped_and_audited(sandbox: Sandbox, mode3: str, effect: str, kind: str) -> None:
    py, _ = unpriv_python()
    sandbox.write("bomb.py", BOMBS, mode=0o644)
    pol = rule(processes={"effect": effect, "fork_bomb_guard": {"max_procs": 20, "max_forks_per_s": 200}})
    r = sandbox.run(pol, [py, "bomb.py", kind, "45", "40"], mode=mode3, timeout=120)
    assert r.returncode == 0, r.stderr
    words = r.stdout.split()
    forked, refused = int(words[1]), int(words[3])
    hits = r.of("fork_bomb", "processes.fork_bomb_guard")
    assert hits and all(a["effect"] == effect for a in hits), r.audits
    assert any("live processes reach the cap of 20" in a["message"] for a in hits)
    if effect == "prevent":
        assert forked <= 19 and refused >= 25, r.stdout  # the app itself is one of the 20
        assert sum(a["extra"]["forks"] for a in hits) >= refused
    else:
        assert forked == 45 and refused == 0, r.stdout


def test_exited_children_free_their_slots(sandbox: Sandbox, mode3: str) -> None:
    """A worker pool forking many short-lived children, one after the other, is never refused."""
    py, _ = unpriv_python()
    sandbox.write(
        "pool.py",
        "import subprocess\nprint('ok', sum(subprocess.run(['/bin/true']).returncode == 0 for _ in range(120)))\n",
        mode=0o644,
    )
    pol = rule(processes={"effect": "prevent", "fork_bomb_guard": {"max_procs": 10, "max_forks_per_s": 1000}})
    r = sandbox.run(pol, [py, "pool.py"], mode=mode3, timeout=120)
    assert "ok 120" in r.stdout, r.stdout + r.stderr
    assert not r.of("fork_bomb")


THREADS_THEN_FORK = r"""
import os, threading, time
stop = threading.Event()
threads = []
while True:  # a thread bomb: threads are tasks, RLIMIT_NPROC counts them
    t = threading.Thread(target=stop.wait, daemon=True)
    try:
        t.start()
    except RuntimeError:
        break
    threads.append(t)
time.sleep(0.3)
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print("threads", len(threads), "fork ok", flush=True)
except OSError as e:
    print("threads", len(threads), "fork refused", e.errno, flush=True)
stop.set()
"""


@pytest.mark.parametrize("mode", ["user", "garden"])
def test_rlimit_refusal_is_audited(sandbox: Sandbox, mode: str) -> None:
    """The kernel's RLIMIT_NPROC (unprivileged, prevent) refuses before the guard's own cap when the
    uid's tasks are threads: the guard sees the uid at its limit and refuses and audits the fork."""
    py, _ = unpriv_python()
    sandbox.write("threads.py", THREADS_THEN_FORK, mode=0o644)
    pol = rule(processes={"effect": "prevent", "fork_bomb_guard": {"max_procs": 20, "max_forks_per_s": 200}})
    r = sandbox.run(pol, [py, "threads.py"], mode=mode, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "fork refused 11" in r.stdout, r.stdout
    hits = r.of("fork_bomb", "processes.fork_bomb_guard")
    assert any("RLIMIT_NPROC" in a["message"] and a["effect"] == "prevent" for a in hits), hits


def test_fork_decisions_are_pure() -> None:
    procs = {"effect": "prevent", "fork_bomb_guard": {"max_procs": 5, "max_forks_per_s": 10}}
    r = RuntimePolicy.model_validate({"rules": [{"name": "r", "processes": procs}]}).rules[0]
    assert not decide_fork(r, forks_last_second=3, live_procs=None).violation
    assert decide_fork(r, forks_last_second=11, live_procs=None).blocked
    assert decide_fork(r, forks_last_second=1, live_procs=5).blocked
    assert not decide_fork(r, forks_last_second=1, live_procs=4).violation
    assert decide_fork(r, forks_last_second=1, live_procs=1, user_tasks=90, nproc_limit=90).blocked
    assert not decide_fork(None, forks_last_second=1e6, live_procs=1e6).violation  # type: ignore[arg-type]
    assert nproc_limit(10, 20) == 10 + 20 + 64 and nproc_limit(10, 500) == 1010


def test_app_tree_counts_descendants_only() -> None:
    import time

    tree = AppTree()
    assert tree.count() == 0
    kids = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            time.sleep(5)
            os._exit(0)
        kids.append(pid)
    assert tree.count() == 3 and tree.upper_bound() == 3
    tree.allowed_fork()
    assert tree.upper_bound() == 4  # never below the real count
    for k in kids:
        os.kill(k, 9)
        os.waitpid(k, 0)
    assert tree.count() == 0
