"""Many simulated defenders in one process (one asyncio loop), for tests and benchmarks.

Each simulated defender is a real DefenderChannelClient with its own key, certificate and
connection; only the app and the kernel are missing. Spools live in memory unless asked otherwise.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from websockets.exceptions import ConnectionClosed, InvalidHandshake

from garrison.channel import protocol as p
from garrison.channel.bundle import InstallBundle
from garrison.channel.client import DefenderChannelClient
from garrison.channel.protocol import Hello
from garrison.channel.spool import EventSpool
from garrison.policy.audit import AuditEvent
from garrison.policy.model import RuntimePolicy

ENROL_ATTEMPTS = 5


def shared_policy_parser() -> Callable[[str | bytes], p.Message]:
    """Parse each distinct policy message once for the whole fleet (it is the same text for all).

    In production every defender validates its own copy in its own process, in parallel; in one
    simulation process that work would be serialised 500 times and measure the simulator, not the
    channel. Other messages are parsed per client as usual."""
    cache: dict[str | bytes, p.Message] = {}

    def parse(raw: str | bytes) -> p.Message:
        head = raw[:40].decode(errors="replace") if isinstance(raw, bytes) else raw[:40]
        if len(raw) > 256 and '"type":"policy"' in head:
            msg = cache.get(raw)
            if msg is None:
                if len(cache) > 8:
                    cache.clear()
                msg = cache[raw] = p.parse(raw)
            return msg
        return p.parse(raw)

    return parse


class SimulatedFleet:
    """`n` defenders; `received[i][revision]` = time.perf_counter() when defender i got that revision."""

    def __init__(
        self,
        bundle: InstallBundle,
        base_folder: Path,
        n: int,
        *,
        prefix: str = "sim",
        durable_spool: bool = False,
        batch_size: int = 1000,
        window: int = 4,
        heartbeat_interval: float = 30.0,
        check_hostname: bool = True,
        share_policy_parsing: bool = True,
    ) -> None:
        self.received: list[dict[int, float]] = [{} for _ in range(n)]
        self._got: collections.Counter[int] = collections.Counter()
        """revision -> how many defenders have it (polling this is O(1), not O(fleet))"""
        self._revision_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.clients: list[DefenderChannelClient] = []
        parser = shared_policy_parser() if share_policy_parsing else p.parse
        for i in range(n):
            folder = base_folder / f"{prefix}-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            spool = None if durable_spool else EventSpool(":memory:")
            self.clients.append(
                DefenderChannelClient(
                    bundle,
                    folder,
                    Hello(
                        defender_id=f"{prefix}-{i}",
                        app_id=f"{prefix}-app",
                        app_name=f"{prefix}-app",
                        org="sim-org",
                        space="sim-space",
                        instance=i,
                        version="sim",
                    ),
                    on_policy=self._recorder(i),
                    spool=spool,
                    cache_policy=durable_spool,
                    batch_size=batch_size,
                    window=window,
                    heartbeat_interval=heartbeat_interval,
                    check_hostname=check_hostname,
                    parser=parser,
                )
            )
        self._tasks: list[asyncio.Task[None]] = []

    def _recorder(self, i: int) -> Callable[[int, RuntimePolicy], None]:
        def on_policy(revision: int, policy: RuntimePolicy) -> None:
            if revision not in self.received[i]:
                self.received[i][revision] = time.perf_counter()
                self._got[revision] += 1

        return on_policy

    async def start(self, *, enrol_concurrency: int = 16, timeout: float = 120.0) -> None:
        """Enrol (bounded concurrency: each enrolment is a key generation and a CA signature), then
        connect everyone and wait until all have their first policy."""
        sem = asyncio.Semaphore(enrol_concurrency)

        async def enrol(c: DefenderChannelClient) -> None:
            if not c.defender_id:
                async with sem:
                    for attempt in range(ENROL_ATTEMPTS):  # a busy console may time a handshake out
                        try:
                            await c.enrol()
                            return
                        except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake):
                            if attempt == ENROL_ATTEMPTS - 1:
                                raise
                            await asyncio.sleep(1.0 + attempt)

        await asyncio.gather(*(enrol(c) for c in self.clients))
        self._tasks = [asyncio.create_task(c.run()) for c in self.clients]
        await self.wait_connected(timeout)

    async def wait_connected(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(c.connected for c in self.clients):
            if time.monotonic() > deadline:
                missing = sum(not c.connected for c in self.clients)
                raise TimeoutError(f"{missing} simulated defenders did not connect")
            await asyncio.sleep(0.05)

    async def wait_revision(self, revision: int, timeout: float) -> list[float]:
        """Receipt times of `revision` at every defender (raises TimeoutError if some never get it)."""
        deadline = time.monotonic() + timeout
        while self._got[revision] < len(self.received):
            if time.monotonic() > deadline:
                missing = len(self.received) - self._got[revision]
                raise TimeoutError(f"{missing} defenders did not receive revision {revision}")
            await asyncio.sleep(0.002)
        return [r[revision] for r in self.received]

    def submit(self, i: int, events: list[AuditEvent]) -> None:
        self.clients[i].submit_many(events)

    def pending(self) -> int:
        return sum(c.spool.pending() for c in self.clients)

    async def wait_delivered(self, timeout: float) -> None:
        """Until every spool is empty. Only clients that still had events are asked again (a
        COUNT per client every few ms would cost a big fleet more CPU than the sending)."""
        deadline = time.monotonic() + timeout
        waiting = self.clients
        while True:
            waiting = [c for c in waiting if c.spool.read_after(0, 1)]  # O(1), unlike COUNT(*)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.pending()} events still spooled")
            await asyncio.sleep(0.05 if len(waiting) > 100 else 0.01)

    async def stop(self) -> None:
        for c in self.clients:
            await c.aclose()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for c in self.clients:
            c.spool.close()
