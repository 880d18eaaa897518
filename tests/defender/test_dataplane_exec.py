"""Execs under exec controls on both data planes: the native loop answers an exec the process controls
already let through (same path, argv and resolved file, the file unchanged) from its verdict cache, and
a path with nothing to run (libc's PATH search) itself; everything else, and anything changed since,
is decided by Python exactly as before — same outputs, same audits."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.defender.helpers import NOBODY, Sandbox, rule, unpriv_python
from tests.defender.test_dataplane import PLANES
from tests.defender.test_process_controls import FORK_BOMB

RUN = """
import os, shutil, subprocess, sys
def run(*argv):
    try:
        return str(subprocess.run(list(argv)).returncode)
    except PermissionError as e:
        return f"refused{e.errno}"
    except FileNotFoundError as e:
        return f"missing{e.errno}"
"""

DRIFT = (
    RUN
    + """
tool, tool2 = os.path.abspath("tool"), os.path.abspath("tool2")
out = [run(tool), run(tool), run(tool, "x")]
# the same bytes written back, size and mtime restored: only ctime moves, and that is drift
st = os.stat(tool)
data = open(tool, "rb").read()
with open(tool, "r+b") as f:
    f.write(data)
os.utime(tool, ns=(st.st_atime_ns, st.st_mtime_ns))
out.append(run(tool))
# a path that resolved to a baseline file, retargeted at a file written now
os.symlink(tool2, "link")
link = os.path.abspath("link")
out += [run(link), run(link)]
shutil.copy("/bin/true", "fresh")
os.chmod("fresh", 0o755)
os.unlink("link")
os.symlink(os.path.abspath("fresh"), "link")
out.append(run(link))
# nothing to run in an existing directory, then in a missing one
out += [run(os.path.abspath("absent")), run("/nonexistent-dir/absent")]
print(" ".join(out))
"""
)


def _binary(path: Path) -> None:
    path.unlink(missing_ok=True)
    shutil.copy("/bin/true", path)
    os.chmod(path, 0o755)
    if os.getuid() == 0:
        os.chown(path, NOBODY, NOBODY)


def _native_stats(r) -> dict[str, int]:  # type: ignore[no-untyped-def]
    [ex] = [a for a in r.audits if a["control"] == "exit"]
    return ex["extra"].get("native", {})


@pytest.mark.parametrize("effect", ["alert", "prevent"])
def test_cached_exec_verdicts_never_outlive_a_change_to_the_file_or_path(
    sandbox: Sandbox, mode: str, effect: str
) -> None:
    py, _ = unpriv_python()
    sandbox.write("app.py", DRIFT, mode=0o644)
    pol = rule(processes={"effect": effect, "drift_prevention": True})
    seen = {}
    for plane in PLANES:
        for f in ("fresh", "link"):
            (sandbox.app / f).unlink(missing_ok=True)
        for name in ("tool", "tool2"):  # baseline files (present at start), fresh for each run
            _binary(sandbox.app / name)
        r = sandbox.run(pol, [py, "app.py"], garden=mode == "garden", env={"DEFENDER_DATAPLANE": plane})
        assert r.returncode == 0, r.stderr
        drift = [
            (a["exe"].rsplit("/", 1)[-1], a["effect"]) for a in r.of("drift", "processes.drift_prevention")
        ]
        seen[plane] = (r.stdout.split(), drift)
        if plane == "native" and mode != "garden":
            st = _native_stats(r)
            assert st["exec_hits"] >= 2 and st["exec_missing"] >= 1, st
    bad = "refused13" if effect == "prevent" else "0"
    expect = ["0", "0", "0", bad, "0", "0", bad, "missing2", "missing2"]
    for plane in PLANES:
        out, drift = seen[plane]
        assert out == expect, (plane, out)
        assert drift == [("tool", effect), ("fresh", effect)], (plane, drift)


ARGS = (
    RUN
    + """
print(" ".join([run("/bin/echo", "safe"), run("/bin/echo", "safe"), run("/bin/echo", "--dangerous"),
                run("/bin/echo", "safe"), run("/bin/echo", "--dangerous")]))
"""
)


@pytest.mark.parametrize("plane", PLANES)
def test_a_cached_exec_is_the_same_argv_only(sandbox: Sandbox, plane: str) -> None:
    """An argv pattern decides on the arguments: a verdict for one argv never answers another."""
    py, _ = unpriv_python()
    sandbox.write("app.py", ARGS, mode=0o644)
    pol = rule(processes={"effect": "prevent", "deny": [{"path": "*/echo", "args": "--dang"}]})
    r = sandbox.run(pol, [py, "app.py"], env={"DEFENDER_DATAPLANE": plane})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-5:] == ["0", "0", "refused13", "0", "refused13"], r.stdout
    assert len(r.of("process", "processes.deny")) == 2
    if plane == "native":
        assert _native_stats(r)["exec_hits"] >= 2


CALM = """
import os
calm = 0
for i in range(30):  # one at a time, each child reaped: well inside the guard
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    calm += 1
"""
FORKS = CALM + FORK_BOMB.replace('print("forked"', 'print("calm", calm, "forked"')  # then a bomb


@pytest.mark.parametrize("plane", PLANES)
def test_forks_inside_the_guard_are_answered_natively_and_a_bomb_still_caught(
    sandbox: Sandbox, plane: str
) -> None:
    """The loop answers forks its own rate count, its bound on the tree and the task count Python last
    read show inside every limit; a bomb crosses one of them and is decided, audited and refused by
    Python with the loop's count."""
    py, _ = unpriv_python()
    sandbox.write("app.py", FORKS, mode=0o644)
    pol = rule(processes={"effect": "prevent", "fork_bomb_guard": {"max_procs": 40, "max_forks_per_s": 60}})
    r = sandbox.run(pol, [py, "app.py"], env={"DEFENDER_DATAPLANE": plane}, timeout=120)
    assert r.returncode == 0, r.stderr
    words = r.stdout.split()
    assert words[:2] == ["calm", "30"], r.stdout
    assert int(words[3]) <= 100 and int(words[5]) > 0, r.stdout
    hits = r.of("fork_bomb", "processes.fork_bomb_guard")
    assert hits and hits[0]["effect"] == "prevent"
    if plane == "native":
        assert _native_stats(r)["forks"] >= 20, _native_stats(r)
