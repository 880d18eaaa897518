"""Group commit for event batches: concurrent batches from many defenders share one transaction.

SQLite has a single writer and a commit per batch dominates its cost; while one transaction runs,
the batches that arrive queue up and go into the next one together. Each caller still gets exactly
its own new ids (so acks and alerts stay per batch). PostgreSQL, which writes batches in parallel
from its connection pool, does not need this and writes each batch directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from garrison.console.store.open import Store
from garrison.policy.audit import AuditEvent

MAX_EVENTS_PER_COMMIT = 20_000

_Pending = tuple[Sequence[AuditEvent], str, "asyncio.Future[set[str]]"]


class EventWriter:
    def __init__(self, store: Store, *, group_commit: bool | None = None) -> None:
        self.store = store
        self.group_commit = store.dialect == "sqlite" if group_commit is None else group_commit
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None

    async def write(self, events: Sequence[AuditEvent], defender_id: str) -> set[str]:
        if not self.group_commit:
            return await asyncio.to_thread(self.store.events.insert_batch, events, defender_id)
        fut: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._pending.append((events, defender_id, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while self._pending:
            take, size = 0, 0
            while take < len(self._pending) and (
                take == 0 or size + len(self._pending[take][0]) <= MAX_EVENTS_PER_COMMIT
            ):
                size += len(self._pending[take][0])
                take += 1
            group, self._pending = self._pending[:take], self._pending[take:]
            try:
                results = await asyncio.to_thread(
                    self.store.events.insert_groups, [(events, did) for events, did, _ in group]
                )
            except Exception as exc:
                for _, _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, _, fut), new in zip(group, results, strict=True):
                if not fut.done():
                    fut.set_result(new)
