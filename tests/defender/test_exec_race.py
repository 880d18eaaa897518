"""A thread flips the exec path between an allowed and a drifted binary while vfork children exec it:
the seccomp check reads one path, the kernel may open the other. Landlock (native) or the ptrace exec
stop (Garden) must leave 0 bypasses."""

from __future__ import annotations

import pytest

from tests.defender.helpers import Sandbox, rule, unpriv_python

RACE_APP = """
import ctypes, os, shutil, threading
shutil.copy("/bin/false", "drifted")  # written after start: exit status 1 if it ever runs
os.chmod("drifted", 0o755)
BAD = os.path.abspath("drifted") if MODE == "drift" else "/usr/bin/false"  # both exit 1
libc = ctypes.CDLL(None, use_errno=True)
good = b"/usr/bin/true\\0"
bad = BAD.encode() + b"\\0"
buf = ctypes.create_string_buffer(max(len(good), len(bad)) + 1)
ctypes.memmove(buf, good, len(good))
stop = False
def flip():
    while not stop:
        ctypes.memmove(buf, bad, len(bad))
        ctypes.memmove(buf, good, len(good))
t = threading.Thread(target=flip); t.start()
argv = (ctypes.c_char_p * 2)(b"x", None)
envp = (ctypes.c_char_p * 1)(None)
counts = {}
for i in range(N):
    pid = ctypes.c_int()
    err = libc.posix_spawn(ctypes.byref(pid), buf, None, None, argv, envp)
    if err:
        counts["spawn-error"] = counts.get("spawn-error", 0) + 1
        continue
    _, st = os.waitpid(pid.value, 0)
    code = os.waitstatus_to_exitcode(st)
    counts[code] = counts.get(code, 0) + 1
stop = True; t.join()
print("bypassed", counts.get(1, 0), "ran-allowed", counts.get(0, 0), counts, flush=True)
"""


@pytest.mark.parametrize("control", ["drift", "deny"])
def test_exec_path_race_is_closed(sandbox: Sandbox, mode: str, control: str) -> None:
    """drift: closed by Landlock (native) / the ptrace exec stop (Garden); a deny list on a baseline
    binary: closed by the ptrace exec stop, switched on because the rule prevents with a list."""
    py, _ = unpriv_python()
    app = RACE_APP.replace("range(N)", "range(400)").replace("MODE ==", f"{control!r} ==")
    sandbox.write("race.py", app, mode=0o644)
    procs = (
        {"effect": "prevent", "drift_prevention": True}
        if control == "drift"
        else {"effect": "prevent", "deny": ["/usr/bin/false"]}
    )
    r = sandbox.run(rule(processes=procs), [py, "race.py"], garden=mode == "garden", timeout=180)
    assert r.returncode == 0, r.stderr
    words = r.stdout.split()
    print(mode, control, r.stdout.strip())
    assert words[0] == "bypassed" and words[1] == "0", r.stdout
    assert int(words[3]) > 0, r.stdout  # the allowed binary kept working
