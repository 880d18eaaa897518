"""Issue 14.2: one decision, one audit. libc's PATH search tries a refused program under every PATH
entry that reaches it (/usr/bin and /bin on merged /usr), so the same process asks twice for the same
file; it is audited once. Separate attempts (another process, later) are audited again."""

from __future__ import annotations

import pytest

from garrison.defender.process_controls import ExecAuditOnce
from tests.defender.helpers import Sandbox, rule, unpriv_python

APP = r"""
import os, subprocess
for i in range(2):  # two separate processes, each searching PATH
    try:
        subprocess.run(["printf", "PWNED\n"])
    except PermissionError as e:
        print("refused", e.errno, flush=True)
"""


@pytest.mark.parametrize("effect", ["alert", "prevent"])
def test_denied_exec_found_twice_on_path_is_audited_once(sandbox: Sandbox, mode3: str, effect: str) -> None:
    py, _ = unpriv_python()
    sandbox.write("app.py", APP, mode=0o644)
    pol = rule(processes={"effect": effect, "deny": ["printf"]})
    r = sandbox.run(pol, [py, "app.py"], mode=mode3, env={"PATH": "/usr/local/bin:/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    hits = r.of("process", "processes.deny")
    assert len(hits) == 2, [(a["pid"], a["exe"]) for a in hits]  # one per process, not one per PATH entry
    assert hits[0]["pid"] != hits[1]["pid"]
    assert r.stdout.count("refused 13" if effect == "prevent" else "PWNED") == 2, r.stdout


def test_audit_once_window() -> None:
    once = ExecAuditOnce(window=2.0, size=4)
    key = (10, (1, 2), ("printf",), "processes.deny", "prevent")
    assert once.first(key, now=100.0)
    assert not once.first(key, now=101.0)
    assert once.first(key, now=102.5)  # a later, separate attempt
    assert once.first((11, *key[1:]), now=102.5)  # another process
    for i in range(20):  # bounded memory
        once.first((i, "x"), now=200.0 + i)
    assert len(once._seen) <= 4
