"""Heartbeats written in batches: one transaction per second for the whole fleet, not one per beat.

10,000 defenders beating every 30 s are 333 write transactions a second, each a thread hop and (on
SQLite) a turn on the single writer lock the event group commit needs. A heartbeat only refreshes
`stats` and `last_seen`, so the newest beat of each defender is kept in memory (one entry per
defender: bounded by the fleet) and all are written together every FLUSH_S. A crash loses at most
that second of stats; connection state is written when it changes (DefenderStore.connected /
disconnected), never from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from garrison.console.store.open import Store

log = logging.getLogger("garrison.console.heartbeats")

FLUSH_S = 1.0


class HeartbeatBuffer:
    def __init__(self, store: Store, flush_s: float = FLUSH_S) -> None:
        self.store = store
        self.flush_s = flush_s
        self._pending: dict[str, tuple[dict[str, Any], float]] = {}
        self._task: asyncio.Task[None] | None = None

    def record(self, defender_id: str, stats: dict[str, Any]) -> None:
        """On the event loop: keep the newest beat; the flusher writes it within flush_s."""
        self._pending[defender_id] = (stats, time.time())
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_soon())

    def pending(self) -> int:
        return len(self._pending)

    async def _flush_soon(self) -> None:
        while self._pending:  # beats recorded during a flush are written by the next round
            await asyncio.sleep(self.flush_s)
            await self.flush()

    async def flush(self) -> None:
        """Write everything recorded so far (one transaction). A failed write is logged and the
        beats are dropped: the next beat of each defender (≤ 30 s) brings fresh stats anyway."""
        if not self._pending:
            return
        beats, self._pending = self._pending, {}
        try:
            await asyncio.to_thread(
                self.store.defenders.record_heartbeats, [(i, s, t) for i, (s, t) in beats.items()]
            )
        except Exception:
            log.exception("storing %d heartbeats failed", len(beats))

    async def aclose(self) -> None:
        """Write what is pending (at shutdown, after the channel closed its connections)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task  # a flush already in its thread finishes there; its beats are written
        await self.flush()
