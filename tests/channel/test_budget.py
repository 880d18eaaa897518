"""The ingest byte budget: how much defender data the console validates and stores at once.

With the budget spent, read loops wait in line and nothing is lost: every event is stored once
and acked after it was stored, however many defenders send together."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from garrison.channel.budget import ByteBudget
from garrison.channel.server import ChannelServer
from garrison.policy.audit import AuditEvent
from tests.channel.conftest import Pki
from tests.channel.sqlite_backend import SqliteBackend
from tests.channel.test_channel import Running, _client, _ev, _until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


async def test_budget_is_first_come_first_served_and_oversized_goes_alone() -> None:
    budget = ByteBudget(100)
    order: list[str] = []

    async def take(name: str, size: int, hold: asyncio.Event) -> None:
        n = await budget.acquire(size)
        order.append(name)
        await hold.wait()
        budget.release(n)

    holds = {k: asyncio.Event() for k in "abcd"}
    tasks = [asyncio.create_task(take("a", 60, holds["a"]))]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(take("b", 1000, holds["b"]))]  # bigger than the budget: takes all
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(take("c", 10, holds["c"]))]  # fits, but b is first in line
    await asyncio.sleep(0.01)
    assert order == ["a"] and budget.in_use == 60
    holds["a"].set()
    await _until(lambda: order == ["a", "b"])
    assert budget.in_use == 100
    holds["b"].set()
    await _until(lambda: order == ["a", "b", "c"])
    holds["c"].set()
    await asyncio.gather(*tasks)
    assert budget.available == 100 and budget.waits == 2


async def test_cancelled_waiter_leaves_the_budget_whole() -> None:
    budget = ByteBudget(10)
    n = await budget.acquire(10)
    waiter = asyncio.create_task(budget.acquire(5))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    budget.release(n)
    assert budget.available == 10
    assert await budget.acquire(10) == 10


class _CountingBackend(SqliteBackend):
    """Records how many batches are being stored at the same time."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.active = 0
        self.max_active = 0

    async def store_events(self, defender_id: str, events: Sequence[AuditEvent]) -> int:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(0.01)  # a slow store: batches of other defenders arrive meanwhile
            return await super().store_events(defender_id, events)
        finally:
            self.active -= 1


async def test_spent_budget_makes_defenders_wait_and_loses_nothing(tmp_path: Path, pki: Pki) -> None:
    from tests.channel.conftest import TOKEN

    backend = _CountingBackend(tmp_path / "console.db", pki.ca, TOKEN)
    # A budget of one byte: every message takes all of it, so one batch at a time console-wide.
    server = ChannelServer(
        backend, pki.server_context(), "127.0.0.1", 0, policy_poll_interval=None, ingest_budget_bytes=1
    )
    await server.start()
    try:
        clients = [
            _client(pki, server.port, tmp_path / f"d{i}", name=f"app{i}", batch_size=20) for i in range(6)
        ]
        running = [Running(c) for c in clients]
        await _until(lambda: all(c.connected for c in clients))
        for i, c in enumerate(clients):
            c.submit_many([_ev(k, prefix=f"b{i}") for k in range(100)])
        await _until(lambda: all(c.spool.pending() == 0 for c in clients), timeout=60)
        assert backend.max_active == 1
        assert server.budget.waits > 0 and server.budget.available == 1
        assert backend.db.execute("SELECT count(*) FROM events").fetchone()[0] == 600
        for r in running:
            await r.close()
    finally:
        await server.stop()
