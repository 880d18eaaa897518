"""Event batches written with group commit (garrison.console.services.group_commit).

SQLite has a single writer and a commit per batch dominates its cost; batches from many defenders
that arrive while one transaction runs go into the next one together. Each caller still gets
exactly its own new ids (so acks and alerts stay per batch), and only after the commit. PostgreSQL,
which writes batches in parallel from its connection pool, does not need this and writes each batch
directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from garrison.console.services.group_commit import GroupCommit
from garrison.console.store.open import Store
from garrison.policy.audit import AuditEvent

MAX_EVENTS_PER_COMMIT = 20_000

_Batch = tuple[Sequence[AuditEvent], str]


class EventWriter:
    def __init__(self, store: Store, *, group_commit: bool | None = None) -> None:
        self.store = store
        self.group_commit = store.dialect == "sqlite" if group_commit is None else group_commit
        self.commits: GroupCommit[_Batch, set[str]] = GroupCommit(
            store.events.insert_groups, max_weight=MAX_EVENTS_PER_COMMIT, weight=lambda b: len(b[0])
        )

    async def write(self, events: Sequence[AuditEvent], defender_id: str) -> set[str]:
        if not self.group_commit:
            return await asyncio.to_thread(self.store.events.insert_batch, events, defender_id)
        return await self.commits.submit((events, defender_id))
