"""Issue 9.5: a renamed copy of a denied program is the denied program. Deny patterns keep matching
paths and names; on top, the files they name (resolved when the policy loads: `/bin/sh` → dash, a bare
name in the system's bin directories, an `@family` of well-known programs) are known by content, so a
copy under any name, in any directory, run in any way, is refused (prevent) or reported (alert) —
as root, as the created user and under the Garden-like filter."""

from __future__ import annotations

import re

import pytest

from garrison.defender.identity import DeniedIdentities, files_named
from garrison.policy.evaluate import decide_exec
from garrison.policy.model import RuntimePolicy
from tests.defender.helpers import Sandbox, rule, unpriv_python

COPIES = r"""
import glob, os, shutil, subprocess
os.makedirs("x", exist_ok=True)
shutil.copy("/usr/bin/dash", "x/worker")  # the review's example
shutil.copy("/usr/bin/bash", "python3")  # a copy named like an allowed program
shutil.copy("/usr/bin/dash", "x/sealed")
os.chmod("x/sealed", 0o111)  # run-only: the defender (same user) cannot read it to compare
with open("x/via-script", "w") as f:
    f.write("#!" + os.path.abspath("x/worker") + "\necho PWNED-script\n")
os.chmod("x/via-script", 0o755)
SAY = "echo PWNED-$0"

def attempt(tag, argv, **kw):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, **kw).stdout.strip()
        print(tag, "ran", out or "-", flush=True)
    except PermissionError as e:
        print(tag, "refused", e.errno, flush=True)

attempt("worker", ["x/worker", "-c", SAY])
attempt("python3", ["./python3", "-c", SAY])
attempt("sealed", ["x/sealed", "-c", SAY])
attempt("script", ["x/via-script"])
loader = sorted(glob.glob("/lib64/ld-linux-x86-64.so.*"))[0]
attempt("ldso", [loader, "x/worker", "-c", SAY])
fd = os.open("x/worker", os.O_RDONLY)
attempt("fd", [f"/proc/self/fd/{fd}", "-c", SAY], pass_fds=[fd])
m = os.memfd_create("worker", 0)
with open("/usr/bin/dash", "rb") as f:
    os.write(m, f.read())
attempt("memfd", [f"/proc/self/fd/{m}", "-c", SAY], pass_fds=[m])
attempt("benign", ["/usr/bin/true"])
"""
TAGS = ["worker", "python3", "sealed", "script", "ldso", "fd", "memfd"]


@pytest.mark.parametrize("effect", ["alert", "prevent"])
def test_renamed_copies_of_denied_programs(sandbox: Sandbox, mode3: str, effect: str) -> None:
    py, _ = unpriv_python()
    sandbox.write("copies.py", COPIES, mode=0o644)
    pol = rule(processes={"effect": effect, "deny": ["/bin/sh", "@shells"]})
    r = sandbox.run(pol, [py, "copies.py"], mode=mode3, timeout=90)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "benign ran -" in out, out
    hits = r.of("process", "processes.deny")
    assert all(a["effect"] == effect for a in hits)
    for tag in TAGS:
        if effect == "prevent":
            assert re.search(rf"^{tag} refused 13$", out, re.M), f"{tag}: {out}"
        else:
            assert re.search(rf"^{tag} ran PWNED-", out, re.M), f"{tag}: {out}"
    copies = [a for a in hits if "is a copy of" in a["message"]]
    assert len(copies) >= len(TAGS), [a["message"] for a in hits]
    assert any(a["exe"].endswith("/x/worker") and "/usr/bin/dash" in a["message"] for a in copies)
    assert any(a["exe"].endswith("/python3") and "/usr/bin/bash" in a["message"] for a in copies)
    assert any(a["exe"].startswith("/memfd:worker") for a in copies)


def test_identity_sources_and_limits() -> None:
    """What each pattern kind names, by content; a pattern naming too many files stays path-based."""
    assert "/usr/bin/dash" in (files_named("/bin/sh") or [])
    assert set(files_named("@shells") or []) >= {"/usr/bin/dash", "/usr/bin/bash"}
    assert "/usr/bin/dash" in (files_named("dash") or [])
    assert files_named("/no/such/file") == []
    ids = DeniedIdentities.build(["/usr/bin/*", "dash"])
    assert ids.path_only == ["/usr/bin/*"] and len(ids.by_digest) == 1
    r = RuntimePolicy.model_validate({"rules": [{"name": "r", "processes": {"effect": "prevent",
                                                  "deny": [{"path": "dash", "args": "-c"}]}}]}).rules[0]  # fmt: skip
    # an argv pattern still needs its args, by path or by identity
    assert not decide_exec(r, "/x/worker", ["worker", "-i"], copy_of={0: "/usr/bin/dash"}).violation
    assert decide_exec(r, "/x/worker", ["worker", "-c", "id"], copy_of={0: "/usr/bin/dash"}).blocked
    # @family names match by basename too (the console's preview agrees with the defender)
    r2 = RuntimePolicy.model_validate({"rules": [{"name": "r", "processes": {"effect": "alert",
                                                   "deny": ["@netcat"]}}]}).rules[0]  # fmt: skip
    assert decide_exec(r2, "/opt/bin/ncat", ["ncat"]).audited
    assert not decide_exec(r2, "/opt/bin/cat", ["cat"]).violation
