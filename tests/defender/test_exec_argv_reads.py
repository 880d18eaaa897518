"""The native loop reads an exec's path, argv pointers and arguments in batches (one remote read for the
path and the pointer array, one for all the arguments) and falls back to one string at a time where a
string does not end within its page; the exec lines and the verdict cache must see exactly the argv the
app passed, whatever its shape, on both planes and where process_vm_readv is refused (Garden)."""

from __future__ import annotations

import json

import pytest

from tests.defender.helpers import ALLOW_ALL, Sandbox, rule, unpriv_python
from tests.defender.test_dataplane import PLANES

ARGVS = """
import subprocess
argvs = [
    ["true"] + [f"a{i}" for i in range(100)],  # more than one batch of strings
    ["true", "x" * 4000, "y" * 4000, "z" * 4000],  # strings that cross pages
    ["true", "", "after-empty", ""],
    ["true", "q" * 4090, "short"],  # close to the 4,096 bytes a line keeps of an argument
]
for argv in argvs:
    for _ in range(2):  # the second run of the same exec is answered from the verdict cache
        subprocess.run(argv, executable="/bin/true", check=True)
print("done")
"""


@pytest.mark.parametrize("dataplane", PLANES)
@pytest.mark.parametrize("policy", ["allow-all", "drift"])
@pytest.mark.parametrize("garden", [False, True])
def test_exec_lines_hold_the_argv_the_app_passed(
    sandbox: Sandbox, dataplane: str, policy: str, garden: bool
) -> None:
    py, _ = unpriv_python()
    sandbox.write("app.py", ARGVS, mode=0o644)
    pol = (
        ALLOW_ALL
        if policy == "allow-all"
        else rule(processes={"effect": "prevent", "drift_prevention": True})
    )
    r = sandbox.run(pol, [py, "app.py"], env={"DEFENDER_DATAPLANE": dataplane}, garden=garden)
    assert r.returncode == 0 and "done" in r.stdout, r.stderr
    records = [json.loads(x) for x in (sandbox.data / "garrison-forensics.jsonl").read_text().splitlines()]
    # as a multiset: the Python plane writes a line after the app has its answer, from one of
    # several threads, so two execs in a row can be written in either order
    seen = sorted(
        x["argv"] for x in records if x.get("kind") == "exec" and str(x.get("exe")).endswith("/true")
    )
    expected = [
        ["true"] + [f"a{i}" for i in range(31)],  # a line keeps 32 arguments
        ["true", "x" * 4000, "y" * 4000, "z" * 4000],
        ["true", "", "after-empty", ""],
        ["true", "q" * 4090, "short"],
    ]
    assert seen == sorted(a for a in expected for _ in range(2))
    if dataplane == "native" and policy == "drift":
        [ex] = r.of("defender", "exit")
        assert ex["extra"]["native"]["exec_hits"] >= 4  # the repeats matched the taught argv byte for byte
