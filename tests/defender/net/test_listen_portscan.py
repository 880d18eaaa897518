"""Listening-port control on bind, and port-scan detection on a 100-port sweep."""

from __future__ import annotations

import pytest

from .conftest import HOST4
from .servers import TcpServer, free_port

pytestmark = pytest.mark.slow

BIND = """
import socket, sys
for port in sys.argv[1:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try: s.bind(("127.0.0.1", int(port))); s.listen(); print(port, 0)
    except OSError as e: print(port, e.errno)
s = socket.socket(); s.bind(("127.0.0.1", 0)); print("ephemeral", 0)
"""


@pytest.mark.parametrize("effect", ["prevent", "alert"])
def test_bind_on_denied_port(run_app, effect, ns_call):
    ok, bad = ns_call(lambda: free_port("127.0.0.1")), ns_call(lambda: free_port("127.0.0.1"))
    rule = {"network": {"effect": effect, "listening": {"allow": [str(ok)]}}}
    r = run_app(rule, BIND, str(ok), str(bad))
    res = dict(line.split() for line in r.out.splitlines())
    assert res[str(ok)] == "0" and res["ephemeral"] == "0", r.err
    assert res[str(bad)] == ("13" if effect == "prevent" else "0")  # EACCES
    [audit] = r.of("listen")
    assert (audit.control, audit.dest_port, audit.effect) == ("network.listening.allow", int(bad), effect)


SWEEP = """
import socket, sys
host = sys.argv[1]; ports = [int(p) for p in sys.argv[2:]]
res = []
for p in ports:
    s = socket.socket(); res.append(s.connect_ex((host, p))); s.close()
print(" ".join(map(str, res)))
"""


@pytest.mark.parametrize("effect", ["prevent", "alert"])
def test_connect_sweep_over_100_ports_is_a_port_scan(run_app, ns_call, effect):
    target = ns_call(lambda: TcpServer(HOST4))
    closed = sorted({ns_call(lambda: free_port(HOST4)) for _ in range(120)} - {target.port})[:99]
    ports = [*closed, target.port]  # the one open port comes last, after the threshold
    rule = {"network": {"effect": effect, "port_scan": {"threshold": 50, "window_s": 60}}}
    r = run_app(rule, SWEEP, HOST4, *map(str, ports))
    res = list(map(int, r.out.split()))
    assert len(res) == 100, r.err
    [scan] = r.of("port_scan")
    assert scan.control == "network.port_scan" and scan.effect == effect and scan.severity == "high"
    assert "50 distinct destinations" in scan.message
    if effect == "prevent":
        assert res[-1] == 111 and target.accepted == 0
        assert r.stats["refused"] == 51  # every new destination from the 50th on
    else:
        assert res[-1] == 0


def test_few_connects_are_not_a_scan(run_app, ns_call):
    target = ns_call(lambda: TcpServer(HOST4))
    rule = {"network": {"effect": "prevent", "port_scan": {"threshold": 50, "window_s": 60}}}
    r = run_app(rule, SWEEP, HOST4, *[str(target.port)] * 80)  # same destination 80 times
    assert set(map(int, r.out.split())) == {0}
    assert not r.audits
