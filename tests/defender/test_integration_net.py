"""The network guard plugged into the full defender (its own tests cover the controls in depth)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest

from garrison.defender.dataplane import choose, native_available
from tests.defender.helpers import Sandbox, rule, unpriv_python


@pytest.fixture
def listener() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield s.getsockname()[1]
    s.close()


@pytest.mark.parametrize("dataplane", ["native", "python"])
@pytest.mark.parametrize("effect", ["alert", "prevent"])
def test_denied_connect_through_the_defender(
    sandbox: Sandbox, mode: str, effect: str, listener: int, dataplane: str
) -> None:
    py, _ = unpriv_python()
    sandbox.write(
        "app.py",
        f"""
import socket
s = socket.socket()
try:
    s.connect(("127.0.0.1", {listener}))
    print("connected")
except OSError as e:
    print("refused", e.errno)
""",
        mode=0o644,
    )
    pol = rule(network={"effect": effect, "outbound": {"deny": [f"127.0.0.1:{listener}"]}})
    r = sandbox.run(pol, [py, "app.py"], garden=mode == "garden", env={"DEFENDER_DATAPLANE": dataplane})
    assert r.returncode == 0, r.stderr
    hits = [a for a in r.audits if a["type"] == "network"]
    assert hits and hits[0]["dest_port"] == listener and hits[0]["effect"] == effect
    assert hits[0]["control"] == "network.outbound.deny"
    assert hits[0]["protocol"] == "tcp"  # (Garden: known from the fd's system.sockprotoname)
    assert ("refused" if effect == "prevent" else "connected") in r.stdout
    [start] = [a for a in r.audits if a["control"] == "startup"]
    want = dataplane if native_available()[0] else "python"
    assert start["extra"]["dataplane"] == want
    assert f"data plane: {want}" in " ".join(start["extra"]["mechanisms"])


def test_python_data_plane_is_the_fallback_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    import garrison.defender.dataplane as pkg

    monkeypatch.setitem(sys.modules, "garrison.defender.dataplane._native", None)  # import fails
    monkeypatch.delattr(pkg, "_native", raising=False)
    mode, line = choose({})
    assert mode == "python" and line.startswith("data plane: python (native extension missing")
