"""The forensic ring stays bounded, keeps the newest activity, and is what the upload command returns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from garrison.defender.context import DefenderContext
from garrison.defender.dataplane import native_available
from garrison.defender.forensics import ForensicRing
from garrison.defender.launch import AppEmbeddedDefender, Options
from garrison.kernel.features import KernelFeatures
from garrison.policy.audit import AuditEvent
from garrison.policy.model import RuntimePolicy
from garrison.policy.scope import Identity
from tests.defender.helpers import Sandbox

PLANES = ["native", "python"] if native_available()[0] else ["python"]


def test_ring_is_bounded_and_keeps_newest(tmp_path: Path) -> None:
    ring = ForensicRing(tmp_path, max_bytes=64 * 1024)
    for i in range(5000):
        ring.add("exec", pid=i, exe="/bin/true", argv=["true", "x" * 20])
    ring.flush()
    total = sum(p.stat().st_size for p in tmp_path.glob("forensics*.jsonl"))
    assert total <= 64 * 1024
    snap = ring.snapshot()
    assert snap[-1]["pid"] == 4999 and snap[0]["pid"] > 0
    assert [r["pid"] for r in snap] == sorted(r["pid"] for r in snap)


def test_torn_line_after_crash_is_skipped(tmp_path: Path) -> None:
    ring = ForensicRing(tmp_path)
    ring.add("exec", pid=1)
    ring.flush()
    with open(tmp_path / "forensics.jsonl", "a") as f:
        f.write('{"t": 1, "kind": "ex')
    assert [r["pid"] for r in ForensicRing(tmp_path).snapshot()] == [1]


def test_upload_forensics_command_returns_activity_and_audits(tmp_path: Path) -> None:
    d = AppEmbeddedDefender(["/bin/true"], {"DATA_FOLDER": str(tmp_path)}, Options())
    ctx = DefenderContext(Identity(app_name="shop"), "def-1", KernelFeatures(), ForensicRing(tmp_path))
    ctx.set_policy(RuntimePolicy.model_validate({"rules": [{"name": "r"}]}))
    d.ctx = ctx
    ctx.record("connect", pid=7, dest="10.0.0.1:443")
    ctx.audit(AuditEvent(type="process", effect="alert", control="processes.deny", pid=8, message="m"))
    out = d._command("upload_forensics", {})
    kinds = [r["kind"] for r in out["records"]]
    assert kinds == ["connect", "audit"]
    audit = out["records"][1]
    assert audit["defender_id"] == "def-1" and audit["app_name"] == "shop" and audit["rule"] == "r"
    try:
        d._command("rm -rf", {})
    except ValueError as exc:
        assert "unknown command" in str(exc)
    else:
        raise AssertionError("unknown command accepted")


TREE_APP = r"""
import os, subprocess
pid = os.fork()
if pid == 0:  # a worker that forks a grandchild which runs a program
    g = os.fork()
    if g == 0:
        os.execv("/bin/true", ["true", "grandchild"])
    os.waitpid(g, 0)
    os._exit(0)
os.waitpid(pid, 0)
subprocess.run(["/bin/echo", "direct"])
print("app", os.getpid(), "worker", pid, flush=True)
"""


@pytest.mark.parametrize("dataplane", PLANES)
def test_forensic_records_rebuild_the_process_tree(sandbox: Sandbox, mode3: str, dataplane: str) -> None:
    """Issue 18.8: exec and fork records carry ppid, so the tree app → worker → grandchild exec can be
    rebuilt, on both data planes; a fork's time is when it was decided, so it comes before the exec
    of the child it made even where records are written in batches; the forensic file is 0600 like
    the other data files."""
    import os
    import stat

    from garrison.defender.forensics import process_tree
    from tests.defender.helpers import ALLOW_ALL, unpriv_python

    py, _ = unpriv_python()
    sandbox.write("app.py", TREE_APP, mode=0o644)
    # allow-all: on the native plane the loop answers execs and forks itself and writes these lines
    r = sandbox.run(ALLOW_ALL, [py, "app.py"], mode=mode3, env={"DEFENDER_DATAPLANE": dataplane})
    assert r.returncode == 0, r.stderr
    words = r.stdout.split()
    app_pid, worker = int(words[words.index("app") + 1]), int(words[words.index("worker") + 1])
    path = sandbox.data / "garrison-forensics.jsonl"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sandbox.data / "garrison-audit.jsonl").st_mode) == 0o600
    records = [json.loads(x) for x in path.read_text().splitlines()]
    execs = [x for x in records if x["kind"] == "exec"]
    assert execs and all("ppid" in x for x in execs)
    forks = [x for x in records if x["kind"] == "fork"]
    assert {app_pid, worker} <= {x["pid"] for x in forks} and all(x.get("ppid") for x in forks)
    (branch,) = [n for n in process_tree(records) if n["pid"] == app_pid or app_pid in _pids(n)]
    (app,) = [n for n in _walk(branch) if n["pid"] == app_pid]
    w = next(c for c in app["children"] if c["pid"] == worker)
    assert w["forks"] >= 1 and [e["argv"] for g in w["children"] for e in g["execs"]] == [
        ["true", "grandchild"]
    ]
    (grandchild_exec,) = [e for g in w["children"] for e in g["execs"]]
    assert w["fork_times"] and w["fork_times"][0] <= grandchild_exec["t"]
    assert any(e["exe"].endswith("/echo") for c in app["children"] for e in c["execs"])


LINES_APP = r"""
import os, subprocess, threading, time
args = ['q"uote', "back\\slash", "tab\there", "del\x7f", "ctl\x01", "new\nline", "caf\u00e9"]
subprocess.run(["/bin/echo", *args], stdout=subprocess.DEVNULL)
subprocess.run(["/bin/echo", "plain"], stdout=subprocess.DEVNULL)
def work():  # a thread that forks and is gone before the record is written
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print("thread", threading.get_native_id(), flush=True)
t = threading.Thread(target=work)
t.start()
t.join()
print("app", os.getpid(), flush=True)
time.sleep(0.3)  # the records are drained (and counted) before the exit audit
"""
EXEC_KEYS = ["t", "kind", "pid", "ppid", "exe", "argv", "loader", "script", "verdict"]
FORK_KEYS = ["t", "kind", "pid", "tid", "ppid", "syscall", "verdict"]


@pytest.mark.parametrize("dataplane", PLANES)
def test_exec_and_fork_lines_are_the_same_on_both_planes(sandbox: Sandbox, dataplane: str) -> None:
    """The native loop formats the exec and fork lines itself: byte for byte what json.dumps writes
    (keys, order, escapes of quotes, backslashes and control characters; a non-ASCII argument is left
    to Python); a fork by a thread that is gone by the time lines are written is recorded under its
    process (thread group), with the thread in `tid`."""
    from tests.defender.helpers import ALLOW_ALL, unpriv_python

    py, _ = unpriv_python()
    sandbox.write("app.py", LINES_APP, mode=0o644)
    r = sandbox.run(ALLOW_ALL, [py, "app.py"], env={"DEFENDER_DATAPLANE": dataplane})
    assert r.returncode == 0, r.stderr
    words = r.stdout.split()
    app_pid, thread = int(words[words.index("app") + 1]), int(words[words.index("thread") + 1])
    lines = (sandbox.data / "garrison-forensics.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    for line, rec in zip(lines, records, strict=True):
        if rec["kind"] in ("exec", "fork"):
            assert json.dumps(rec) == line
            assert list(rec) == (EXEC_KEYS if rec["kind"] == "exec" else FORK_KEYS), line
    echoes = [x["argv"][1:] for x in records if x["kind"] == "exec" and x["exe"].endswith("/echo")]
    assert echoes == [['q"uote', "back\\slash", "tab\there", "del\x7f", "ctl\x01", "new\nline", "caf\u00e9"],
                      ["plain"]]  # fmt: skip
    (fork,) = [x for x in records if x["kind"] == "fork" and x["tid"] == thread]
    assert fork["pid"] == app_pid and fork["ppid"] and fork["verdict"] == "allow"
    if dataplane == "native":
        [ex] = r.of("defender", "exit")
        assert ex["extra"]["native"]["proc_lines"] >= 4  # formatted by the loop, not by Python


def _walk(n: dict) -> list[dict]:
    return [n, *(x for c in n["children"] for x in _walk(c))]


def _pids(n: dict) -> set[int]:
    return {x["pid"] for x in _walk(n)}


def test_process_tree_survives_recycled_pids_and_junk() -> None:
    from garrison.defender.forensics import process_tree

    recs = [
        {"kind": "exec", "pid": 5, "ppid": 6, "exe": "/a"},
        {"kind": "exec", "pid": 6, "ppid": 5, "exe": "/b"},  # a loop from a recycled pid
        {"kind": "child", "pid": 6, "child": 7},
        {"kind": "connect", "pid": 7},
        {"kind": "exec", "pid": True, "ppid": 1},
        {"kind": "fork"},
    ]
    roots = process_tree(recs)
    assert sorted(_pids(roots[0]) | {p for r in roots[1:] for p in _pids(r)}) == [5, 6, 7]
    assert process_tree(recs, focus_pid=7)[0]["pid"] in (5, 6)
    assert process_tree(recs, focus_pid=99) == []


def test_incident_branch_reaches_the_root_through_busy_ancestors() -> None:
    """The branch of a process three levels down keeps every ancestor (each with only the child on
    the way down) even where ancestors have other children; children are listed by their first
    record's time, whatever order the records were written in (the native plane drains in batches)."""
    from garrison.defender.forensics import process_tree

    recs = [
        {"t": 1.0, "kind": "exec", "pid": 10, "ppid": 1, "exe": "/app"},
        {"t": 1.5, "kind": "exec", "pid": 12, "ppid": 10, "exe": "/late"},
        {"t": 1.1, "kind": "fork", "pid": 10, "ppid": 1},
        {"t": 1.2, "kind": "exec", "pid": 11, "ppid": 10, "exe": "/worker"},
        {"t": 1.3, "kind": "exec", "pid": 13, "ppid": 11, "exe": "/sh"},
        {"t": 1.4, "kind": "exec", "pid": 14, "ppid": 11, "exe": "/other"},
        {"t": 1.6, "kind": "exec", "pid": 15, "ppid": 13, "exe": "/curl"},
    ]
    (whole,) = process_tree(recs)
    assert [c["pid"] for c in whole["children"]] == [11, 12] and whole["fork_times"] == [1.1]
    (top,) = process_tree(recs, focus_pid=13)
    assert top["pid"] == 10 and [c["pid"] for c in top["children"]] == [11]
    assert [c["pid"] for c in top["children"][0]["children"]] == [13]
    assert top["children"][0]["children"][0]["children"][0]["pid"] == 15


def test_defender_help_names_the_program() -> None:
    import subprocess
    import sys

    from tests.defender.helpers import REPO

    code = "from garrison.cli.defender_entry import main; main()"
    for args, want in ((["--help"], "Usage: defender [OPTIONS] COMMAND"),
                       (["app-embedded", "--help"], "Usage: defender app-embedded [OPTIONS]")):  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        ).stdout  # fmt: skip
        assert want in out and "defender defender" not in out, out
