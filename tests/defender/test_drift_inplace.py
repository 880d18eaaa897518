"""Issue 9.2: a baseline executable rewritten in place (same inode) with its size and mtime put back
is drift: the supervisor keys on ctime, which the owner cannot set back. Every way of rewriting it —
same-size overwrite, truncate and rewrite, a shared mmap, writing through a second hard link — is
refused under prevent and reported under alert, as root, as the created user and under Garden."""

from __future__ import annotations

import pytest

from tests.defender.helpers import Sandbox, rule, unpriv_python

REWRITES = r"""
import mmap, os, subprocess
GOOD, EVIL = b"#!/bin/sh\necho tool-ok\n", b"#!/bin/sh\necho PWNED!!\n"
assert len(GOOD) == len(EVIL)

def forge(path, write):
    st = os.stat(path)
    write(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as they were
    now = os.stat(path)
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)

def overwrite(p):
    with open(p, "r+b") as f:
        f.write(EVIL)

def truncate(p):
    with open(p, "wb") as f:
        f.write(EVIL)

def shared_mmap(p):
    with open(p, "r+b") as f:
        m = mmap.mmap(f.fileno(), 0)
        m[:] = EVIL
        m.flush()
        m.close()

def via_link(p):
    os.link(p, p + ".alias")
    os.unlink(p + ".alias")  # nothing left to see but the changed content
    with open(p, "r+b") as f:
        f.write(EVIL)

for name, fn in [("overwrite", overwrite), ("truncate", truncate), ("mmap", shared_mmap), ("link", via_link)]:
    path = os.path.abspath(f"tool-{name}.sh")
    forge(path, fn)
    try:
        print(name, subprocess.run([path], capture_output=True, text=True).stdout.strip(), flush=True)
    except PermissionError as e:
        print(name, "refused", e.errno, flush=True)
print("untouched", subprocess.run(["./tool-untouched.sh"], capture_output=True, text=True).stdout.strip())
"""
KINDS = ["overwrite", "truncate", "mmap", "link"]


@pytest.mark.parametrize("effect", ["alert", "prevent"])
def test_in_place_rewrite_with_mtime_restored_is_drift(sandbox: Sandbox, mode3: str, effect: str) -> None:
    py, _ = unpriv_python()
    for k in [*KINDS, "untouched"]:
        sandbox.write(f"tool-{k}.sh", "#!/bin/sh\necho tool-ok\n")
    sandbox.write("rw.py", REWRITES, mode=0o644)
    r = sandbox.run(rule(processes={"effect": effect, "drift_prevention": True}), [py, "rw.py"], mode=mode3)
    assert r.returncode == 0, r.stderr
    assert "untouched tool-ok" in r.stdout  # the baseline keeps working
    drift = r.of("drift", "processes.drift_prevention")
    for k in KINDS:
        assert f"{k} {'refused 13' if effect == 'prevent' else 'PWNED!'}" in r.stdout, r.stdout
        assert [a for a in drift if a["exe"].endswith(f"tool-{k}.sh") and a["effect"] == effect], k
    assert not [a for a in drift if "untouched" in a["exe"]]
