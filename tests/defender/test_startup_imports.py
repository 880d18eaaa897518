"""What the defender loads on its start path: only what the policy's features need (issue 11:
start-up time and RSS are mostly imports). A module-set check, not a timing check."""

from __future__ import annotations

import re

import pytest

from tests.defender.helpers import Sandbox, rule

# never needed to protect an app from a policy file with these controls; each one was measured
# on the start path once (typer/click ~25 % of the start-up, dnspython ~10 %)
NOT_LOADED = (
    "typer",
    "click",
    "rich",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "httpx",
    "websockets",
    "cryptography",
    "yaml",
    "dns",  # dnspython: loaded by the DNS proxy's first query
    "garrison.cnaf",
    "garrison.console",
    "garrison.scan",
    "garrison.cell",
    "garrison.host",
    "garrison.embed",
    "garrison.demo",
    "garrison.channel.client",
    "garrison.defender.cnaf_hook",
)

POLICY = rule(
    processes={"effect": "prevent", "drift_prevention": True, "deny": ["/usr/bin/nc*"]},
    network={"effect": "prevent", "outbound": {"deny": [{"cidr": "192.0.2.0/24"}]}},
)


def _loaded(stderr: str) -> set[str]:
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)\s*$", stderr, re.M))


@pytest.mark.parametrize("plane", ["native", "python"])
def test_start_path_loads_only_what_the_policy_needs(sandbox: Sandbox, plane: str) -> None:
    r = sandbox.run(POLICY, ["/bin/true"], env={"PYTHONPROFILEIMPORTTIME": "1", "DEFENDER_DATAPLANE": plane})
    assert r.returncode == 0, r.stderr[-2000:]
    mods = _loaded(r.stderr)
    assert "garrison.defender.launch" in mods and "garrison.defender.net.guard" in mods  # it did run
    unwanted = sorted(m for m in mods if any(m == n or m.startswith(n + ".") for n in NOT_LOADED))
    assert unwanted == []
