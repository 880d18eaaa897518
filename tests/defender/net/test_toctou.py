"""Racing-thread TOCTOU on connect: a second thread flips the sockaddr between an allowed and a
denied port while the first connects in a loop. Emulation must let 0 connects reach the denied port."""

from __future__ import annotations

import time

import pytest

from .conftest import HOST4
from .servers import TcpServer

pytestmark = pytest.mark.slow

FLIPPER = """
import ctypes, socket, struct, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
def sa(p): return struct.pack("=H", 2) + struct.pack("!H", p) + socket.inet_aton(host) + bytes(8)
def flipping(A, B):
    \"\"\"A 16-byte buffer a second thread keeps rewriting between A and B; stop() ends it.\"\"\"
    buf = ctypes.create_string_buffer(A, 16)
    stop = threading.Event()
    def flip():
        mv = ctypes.memmove
        while not stop.is_set():
            mv(buf, B, 16); mv(buf, A, 16)
    t = threading.Thread(target=flip); t.start()
    return buf, lambda: (stop.set(), t.join())
"""

RACE = """
host, ok, bad, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
buf, stop = flipping(sa(ok), sa(bad))
connected = refused = 0
for i in range(n):
    s = socket.socket()
    if libc.connect(s.fileno(), buf, 16) == 0: connected += 1
    else: refused += 1
    s.close()
stop()
print(connected, refused)
"""

RACE = FLIPPER + RACE
TRIES = 3000


def _settle(*servers: TcpServer) -> None:
    last = -1
    while sum(s.accepted for s in servers) != last:
        last = sum(s.accepted for s in servers)
        time.sleep(0.2)


def test_racing_thread_cannot_swap_in_a_denied_port(run_app, ns_call):
    ok, bad = ns_call(lambda: TcpServer(HOST4)), ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{bad.port}"]}}}
    r = run_app(rule, RACE, HOST4, str(ok.port), str(bad.port), str(TRIES), timeout=300)
    connected, refused = map(int, r.out.split())
    _settle(ok, bad)
    assert connected + refused == TRIES, r.err
    assert refused > 0, "the flipping thread never won a read: the race was not exercised"
    assert bad.accepted == 0, f"{bad.accepted}/{TRIES} connects reached the denied port"
    assert ok.accepted == connected
    assert r.stats["emulated"] == connected


def test_race_window_exists_without_emulation(run_app, ns_call):
    """Control experiment (CONTINUE mode, as in Garden): documents the weaker guarantee.
    The number that got through varies run to run, so it is reported, not asserted."""
    ok, bad = ns_call(lambda: TcpServer(HOST4)), ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": "prevent", "outbound": {"deny": [f"{HOST4}:{bad.port}"]}}}
    r = run_app(rule, RACE, HOST4, str(ok.port), str(bad.port), "1000", emulate=False, timeout=300)
    _settle(ok, bad)
    print(f"CONTINUE mode: {bad.accepted}/1000 racing connects reached the denied port")
    assert r.rc == 0, r.err
