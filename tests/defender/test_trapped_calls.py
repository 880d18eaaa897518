"""What the filter sends to the data plane: a `send()` without an address is never trapped (it goes to
the peer its connect was decided for), a `sendto` with one still is and is still decided."""

from __future__ import annotations

import errno
import socket
import threading

import pytest

from garrison.defender.dataplane import native_available
from tests.defender.helpers import Sandbox, rule, unpriv_python

PLANES = ["native", "python"] if native_available()[0] else ["python"]
SENDS = 40

APP = """
import socket, sys
tcp, denied = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", tcp))
for _ in range(int(sys.argv[3])):
    s.send(b"x")
s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.sendto(b"y", ("127.0.0.1", denied))
    print("sent")
except OSError as exc:
    print("refused", exc.errno)
"""


@pytest.mark.parametrize("dataplane", PLANES)
def test_plain_sends_are_not_trapped_addressed_ones_are_decided(sandbox: Sandbox, dataplane: str) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    denied = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    denied.bind(("127.0.0.1", 0))
    got = bytearray()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            while chunk := conn.recv(4096):
                got.extend(chunk)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        sandbox.write("app.py", APP, 0o644)
        py, _ = unpriv_python()
        pol = rule(network={"effect": "prevent", "outbound": {"deny": [f"127.0.0.1:{denied.getsockname()[1]}"]}})
        r = sandbox.run(
            pol, [py, "app.py", str(srv.getsockname()[1]), str(denied.getsockname()[1]), str(SENDS)],
            env={"DEFENDER_DATAPLANE": dataplane},
        )  # fmt: skip
        t.join(10)
    finally:
        srv.close()
        denied.close()
    assert r.stdout.split() == ["refused", str(errno.EPERM)], r.stderr[-2000:]
    assert bytes(got) == b"x" * SENDS
    assert [a["effect"] for a in r.audits if a["control"] == "network.outbound.deny"] == ["prevent"]
    [exit_audit] = [a for a in r.audits if a["control"] == "exit"]
    # the exec, the connect and the addressed sendto (a few more from the interpreter at most);
    # trapped, the plain sends alone would be SENDS notifications
    extra = exit_audit["extra"]
    received = extra["native"]["received"] if dataplane == "native" else extra["notifications"]
    assert received < SENDS // 2, extra
