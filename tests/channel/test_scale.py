"""Channel mechanisms for thousands of defenders on one console.

- The ingest byte budget (how much defender data the console validates and stores at once): with
  it spent, read loops wait in line and nothing is lost; every event is stored once and acked
  after it was stored, however many defenders send together.
- The connect-time policy snapshot is read and encoded once per wave of connections, and a push
  refreshes it at once.
- The listening socket: its small receive buffer is inherited by every connection."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from garrison.channel.budget import ByteBudget
from garrison.channel.server import ChannelServer
from garrison.policy.audit import AuditEvent
from garrison.policy.model import Rule, RuntimePolicy
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


class _PolicyReadCounting(SqliteBackend):
    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.policy_reads = 0

    async def current_policy(self) -> RuntimePolicy:
        self.policy_reads += 1
        return await super().current_policy()


async def test_connect_snapshot_read_once_for_a_wave_and_refreshed_by_a_push(
    tmp_path: Path, pki: Pki
) -> None:
    from tests.channel.conftest import TOKEN

    backend = _PolicyReadCounting(tmp_path / "console.db", pki.ca, TOKEN)
    backend.put_policy(RuntimePolicy(rules=[Rule(name="first")]))
    server = ChannelServer(backend, pki.server_context(), "127.0.0.1", 0, policy_poll_interval=None)
    await server.start()
    try:
        clients = [_client(pki, server.port, tmp_path / f"s{i}", name=f"snap{i}") for i in range(8)]
        running = [Running(c) for c in clients]
        await _until(lambda: all(c.connected for c in clients))
        assert all(c.policy is not None and c.policy.rules[0].name == "first" for c in clients)
        assert backend.policy_reads < len(clients)  # not one store read per connection
        # A push refreshes the snapshot at once: a defender connecting right after gets the new one.
        backend.put_policy(RuntimePolicy(rules=[Rule(name="second")]))
        await server.notify_policy_changed()
        late = _client(pki, server.port, tmp_path / "late", name="late")
        running.append(Running(late))
        await _until(lambda: late.connected)
        assert late.policy is not None and late.policy.rules[0].name == "second"
        await _until(
            lambda: all(c.policy is not None and c.policy.rules[0].name == "second" for c in clients)
        )
        for r in running:
            await r.close()
    finally:
        await server.stop()


def test_accepted_connections_inherit_the_small_receive_buffer() -> None:
    import socket

    from garrison.channel.server import RECEIVE_BUFFER_BYTES, listen_socket

    sock = listen_socket("127.0.0.1", 0)
    try:
        client = socket.create_connection(sock.getsockname())
        sock.setblocking(True)
        conn, _ = sock.accept()
        # accepted connections inherit the small buffer (Linux reports twice the value set)
        assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) <= 2 * RECEIVE_BUFFER_BYTES
        conn.close()
        client.close()
    finally:
        sock.close()
