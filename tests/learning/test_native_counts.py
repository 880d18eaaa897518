"""Learning on the native data plane is aggregated in the loop: allowed destinations are counted per
(address, port, protocol) in C as the records are drained, and Python gets one row per destination
and drain (NativeDataplane._feed_learned), never one event per connect; the forensic ring still has
every connect's line. Also the bound: distinct destinations beyond the recorder's 4,096 are counted
as dropped, not kept."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from garrison.defender.context import DefenderContext
from garrison.defender.forensics import ForensicRing
from garrison.defender.net import TRAP_ONLY_IF_ARG_NONZERO, NetworkGuard
from garrison.defender.net.standalone import Supervised
from garrison.defender.profile import MAX_ITEMS_PER_KIND, ProfileRecorder
from garrison.kernel.features import probe
from garrison.policy.model import RuntimePolicy
from garrison.policy.scope import Identity

pytestmark = pytest.mark.slow

# connects to closed loopback ports: decided (and recorded) by the loop, refused by the kernel
APP = """
import socket, sys
first, ports, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for _ in range(rounds):
    for port in range(first, first + ports):
        s = socket.socket(); s.connect_ex(("127.0.0.1", port)); s.close()
print("ok")
"""


class CountingRecorder(ProfileRecorder):
    """The real recorder, noting how it was fed (one call per connect, or rows of counts)."""

    def __init__(self) -> None:
        super().__init__()
        self.one_by_one = 0
        self.rows = 0

    def observe(self, kind: str, facts: dict[str, Any]) -> None:
        self.one_by_one += kind == "net"
        super().observe(kind, facts)

    def observe_destinations(self, rows: list[tuple[str, int, str, int, float, float]], dropped: int = 0) -> None:
        self.rows += len(rows)
        super().observe_destinations(rows, dropped)


@pytest.fixture
def native() -> None:
    from garrison.defender.dataplane import native_available

    ok, why = native_available()
    if not ok:
        pytest.skip(why)


def _learn(ports: int, rounds: int, tmp: Path) -> tuple[CountingRecorder, DefenderContext]:
    ctx = DefenderContext(Identity(app_name="shop"), "d1", probe(), ForensicRing(tmp, name="f"))
    recorder = ctx.profile = CountingRecorder()
    ctx.set_policy(RuntimePolicy(rules=[{"name": "learned", "network": {"effect": "learn"}}]))
    guard = NetworkGuard(ctx, upstreams=[])
    guard.start()
    try:
        argv = ["/usr/bin/python3", "-c", APP, "47000", str(ports), str(rounds)]
        sup = Supervised(argv, guard.handlers, ctx, nonzero_arg=TRAP_ONLY_IF_ARG_NONZERO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, dataplane="native", guard=guard)  # fmt: skip
        rc, out, err = sup.communicate(timeout=120)
        assert rc == 0 and "ok" in out, err
        assert sup.native is not None and sup.native.stats()["native"] > 0  # the loop decided them
    finally:
        guard.stop()
    return recorder, ctx


def test_connects_reach_the_profile_as_counts_per_destination(native: None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        recorder, ctx = _learn(3, 100, Path(tmp))
        try:
            (rep,), _ = recorder.take(full=True)
            counts = {(d.ip, d.port, d.protocol): d.count for d in rep.destinations}
            assert counts == {("127.0.0.1", p, "tcp"): 100 for p in (47000, 47001, 47002)}
            assert all(d.first_seen <= d.last_seen for d in rep.destinations)
            assert recorder.one_by_one == 0  # no connect went to Python one by one
            assert 3 <= recorder.rows < 300  # a row per destination and drain
            ctx.forensics.close()
            lines = "".join(p.read_text() for p in Path(tmp).rglob("*") if p.is_file())
            assert lines.count('"dest_port": 47001') == 100  # the forensic record is still per connect
        finally:
            ctx.forensics.close()


def test_distinct_destinations_beyond_the_bound_are_dropped(native: None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        recorder, ctx = _learn(MAX_ITEMS_PER_KIND + 100, 1, Path(tmp))
        ctx.forensics.close()
        reports, _ = recorder.take(full=True)
        dests = [d for r in reports for d in r.destinations]
        assert len(dests) == MAX_ITEMS_PER_KIND
        assert reports[0].dropped >= 100
