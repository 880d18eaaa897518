"""Issue 9, item 7: the racing-thread connect (a second thread flips the sockaddr between an allowed
and a denied port) through the full defender in its three modes. Under the Garden-like filter there is
no pidfd_getfd: the guard swaps in a socket of its own (ADDFD + SETFD) and connects that to the
address it checked, so no racing connect reaches the denied port (the CONTINUE fallback it replaces
let 141-194 of 3000 through). Loopback only."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.defender.helpers import Sandbox, rule, unpriv_python
from tests.defender.net.test_toctou import RACE

pytestmark = pytest.mark.slow


class _Counter:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0

    def drain(self) -> int:
        idle = 0
        while idle < 3:
            got = False
            while True:
                try:
                    conn, _ = self.sock.accept()
                except BlockingIOError:
                    break
                conn.close()
                self.accepted += 1
                got = True
            idle = 0 if got else idle + 1
            time.sleep(0.1)
        return self.accepted


@pytest.fixture
def ports() -> Iterator[tuple[_Counter, _Counter]]:
    ok, bad = _Counter(), _Counter()
    yield ok, bad
    ok.sock.close()
    bad.sock.close()


def test_racing_connects_never_reach_the_denied_port(sandbox: Sandbox, mode3: str, ports) -> None:
    ok, bad = ports
    tries = 3000 if mode3 == "garden" else 1000
    py, _ = unpriv_python()
    sandbox.write("race.py", RACE, mode=0o644)
    pol = rule(network={"effect": "prevent", "outbound": {"deny": [f"127.0.0.1:{bad.port}"]}})
    # nothing accepts while the app runs: a backlog of 4096 holds every connection of the run
    r = sandbox.run(
        pol, [py, "race.py", "127.0.0.1", str(ok.port), str(bad.port), str(tries)], mode=mode3, timeout=600
    )
    assert r.returncode == 0, r.stderr
    connected, refused = map(int, r.stdout.split())
    through = bad.drain()
    print(f"{mode3}: {through}/{tries} racing connects reached the denied port ({connected} allowed)")
    assert connected + refused == tries
    assert refused > 0, "the flipping thread never won a read: the race was not exercised"
    assert through == 0, f"{through}/{tries} connects reached the denied port"
    assert ok.drain() == connected
