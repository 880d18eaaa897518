"""The guard inside a Garden-like container: pidfd_* and process_vm_readv blocked for the supervisor."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import HOST4

pytestmark = pytest.mark.slow
HERE = os.path.dirname(__file__)


def test_fallback_swaps_sockets_and_reads_proc_mem(netns):
    """pidfd_getfd is refused once the filter is on: the guard notices, and the allowed connect is
    made on a socket it installed over the app's descriptor (ADDFD + SETFD), not CONTINUEd."""
    name = os.path.basename(netns)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run(
        ["ip", "netns", "exec", name, sys.executable, os.path.join(HERE, "garden_scenario.py"), HOST4],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["blocked"], "the Garden-like filter did not take effect"
    got = dict(line.split() for line in res["out"].splitlines())
    assert got == {str(res["ok"]): "0", str(res["bad"]): "111"}, res
    assert res["stats"]["swapped"] == 1 and res["stats"]["emulated"] == 1
    assert res["guarantee"].startswith("emulated by socket swap")
    assert res["audits"] == ["network.outbound.deny"] and res["accepted_bad"] == 0
