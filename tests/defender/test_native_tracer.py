"""The native exec tracer (the ptrace exec stop's loop in C): the first exec of each program is handed
to Python, which may teach the verdict; the same exec of the same unchanged file is then let go on by
the C thread itself; a changed file, another argv or a verdict to kill go back to Python; fork events
become "child" forensic lines. Real processes, real ptrace; the defender-level runs check that both
data planes give the same outcomes and audits."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from garrison.defender.dataplane import native_available
from garrison.kernel import ptrace
from tests.defender.helpers import Sandbox, rule, unpriv_python

pytestmark = pytest.mark.skipif(not native_available()[0], reason="native extension not built")


def _traced(app: list[str]) -> tuple[object, object, int]:
    """A Tracer on a child that waits until it is seized, then execs `app`."""
    from garrison.defender.dataplane import _native  # type: ignore[attr-defined]

    loop = _native.Loop(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC), 64)
    tracer = _native.Tracer(loop)
    tracer.start()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(w)
        os.read(r, 1)
        os.execv(app[0], app)
    os.close(r)
    tracer.attach(pid, w, ptrace.EXEC_TRACE_OPTIONS)
    return loop, tracer, pid


def _serve(tracer: object, decide) -> list[bytes]:  # type: ignore[no-untyped-def]
    """Answer every exec stop handed over (what NativeExecTracer's thread does); returns their argv."""
    seen = []
    while True:
        try:
            pid = tracer.take(-1)  # type: ignore[attr-defined]
        except EOFError:
            return seen
        exe = os.readlink(f"/proc/{pid}/exe")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read(65536)
        seen.append(cmdline)
        kill = decide(exe, cmdline)
        if not kill:
            st = os.stat(f"/proc/{pid}/exe")
            facts = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
            tracer.remember(os.fsencode(exe), cmdline, *facts)  # type: ignore[attr-defined]
        tracer.answer(pid, kill)  # type: ignore[attr-defined]


def test_repeats_are_let_go_on_natively_and_a_changed_file_is_checked_again(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    shutil.copy("/bin/true", tool)
    os.chmod(tool, 0o755)
    script = f"{tool}; {tool}; {tool} other-argv; chmod 755 {tool}; {tool}; exit $?"
    loop, tracer, pid = _traced(["/bin/sh", "-c", script])
    tracer.set_mode(True)  # type: ignore[attr-defined]
    # kill what was changed after its verdict (the chmod moved its ctime): Python sees it again
    changed = {"seen": False}

    def decide(exe: str, cmdline: bytes) -> bool:
        if exe == str(tool) and changed["seen"]:
            return True
        changed["seen"] = changed["seen"] or exe.endswith("/chmod")
        return False

    seen = _serve(tracer, decide)
    status = tracer.app_status()  # type: ignore[attr-defined]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 137  # the last tool was killed
    t = os.fsencode(tool)
    assert [c.split(b"\0")[:2] for c in seen[1:]] == [
        [t, b""], [t, b"other-argv"], [b"chmod", b"755"], [t, b""],
    ]  # fmt: skip
    stats = tracer.stats()  # type: ignore[attr-defined]
    assert stats["stop_hits"] == 1 and stats["stop_handed_over"] == len(seen) == 5
    lines = "".join(x for x in loop.drain(100, 0, 2) if isinstance(x, str))  # type: ignore[attr-defined]
    children = [json.loads(x) for x in lines.splitlines()]
    assert len(children) == stats["children"] == 5  # the shell forked five times
    assert all(list(c) == ["t", "kind", "pid", "child"] and c["pid"] == pid for c in children)
    assert all(json.dumps(c) == line for c, line in zip(children, lines.splitlines(), strict=True))


def test_a_rule_that_cannot_kill_hands_nothing_over(tmp_path: Path) -> None:
    _loop, tracer, _pid = _traced(["/bin/sh", "-c", "/bin/true; /bin/true"])
    assert _serve(tracer, lambda *_: True) == []  # mode off: check_exec_stop would never kill
    assert os.waitstatus_to_exitcode(tracer.app_status()) == 0  # type: ignore[attr-defined]
    assert tracer.stats()["stop_execs"] == 3  # type: ignore[attr-defined]


APP = """
import subprocess
out = []
for i in range(12):
    out.append(subprocess.run(["/bin/echo", "x"], stdout=subprocess.DEVNULL).returncode)
try:
    subprocess.run(["/usr/bin/false"])
except PermissionError as e:
    out.append(f"refused{e.errno}")
print(*out)
"""


@pytest.mark.parametrize("plane", ["native", "python"])
def test_exec_stop_outcomes_are_the_same_on_both_planes(sandbox: Sandbox, mode: str, plane: str) -> None:
    """A deny list under prevent switches the ptrace exec stop on: the same outputs and audits on both
    data planes, with the full kernel and under the Garden-like filter (no pidfd: /proc fallbacks);
    on the native plane the repeated execs are let go on by the C tracer itself."""
    py, _ = unpriv_python()
    sandbox.write("app.py", APP, mode=0o644)
    pol = rule(processes={"effect": "prevent", "deny": ["/usr/bin/false"]})
    r = sandbox.run(pol, [py, "app.py"], garden=mode == "garden", env={"DEFENDER_DATAPLANE": plane})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0"] * 12 + ["refused13"]
    assert [a["exe"] for a in r.of("process", "processes.deny")] == ["/usr/bin/false"]
    records = [json.loads(x) for x in (sandbox.data / "garrison-forensics.jsonl").read_text().splitlines()]
    assert sum(1 for x in records if x["kind"] == "child") >= 12
    if plane == "native":
        [ex] = r.of("defender", "exit")
        st = ex["extra"]["native"]
        assert st["stop_hits"] >= 10 and st["stop_handed_over"] <= 3, st


THREAD_FORK = """
import os, subprocess, threading, time
def work():
    subprocess.run(["/bin/true"])  # a fork by a thread that is not the process's main thread
    print("thread", threading.get_native_id(), flush=True)
t = threading.Thread(target=work)
t.start()
t.join()
print("app", os.getpid(), flush=True)
time.sleep(0.3)  # drained before the exit
"""


@pytest.mark.parametrize("plane", ["native", "python"])
def test_a_fork_by_a_thread_is_an_edge_from_its_process(sandbox: Sandbox, plane: str) -> None:
    """The tracer's "child" line names the forking thread's process, not the thread: the tree's
    edge runs from a node that exists."""
    py, _ = unpriv_python()
    sandbox.write("app.py", THREAD_FORK, mode=0o644)
    pol = rule(processes={"effect": "prevent", "deny": ["/usr/bin/false"]})
    r = sandbox.run(pol, [py, "app.py"], env={"DEFENDER_DATAPLANE": plane})
    assert r.returncode == 0, r.stderr
    words = r.stdout.split()
    app_pid, thread = int(words[words.index("app") + 1]), int(words[words.index("thread") + 1])
    assert thread != app_pid
    records = [json.loads(x) for x in (sandbox.data / "garrison-forensics.jsonl").read_text().splitlines()]
    (true_exec,) = [x for x in records if x["kind"] == "exec" and x["exe"].endswith("/true")]
    (edge,) = [x for x in records if x["kind"] == "child" and x["child"] == true_exec["pid"]]
    assert edge["pid"] == app_pid
