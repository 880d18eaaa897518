"""Runtime audit events: idempotent batch insert (event id is unique) and filtered queries."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Select, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from garrison.console.store.tables import events


@dataclass
class EventFilter:
    """All filters are bound parameters: user text never becomes SQL."""

    since: float | None = None
    until: float | None = None
    app: str | None = None
    defender: str | None = None
    type: str | None = None
    effect: str | None = None
    rule: str | None = None
    severities: Sequence[str] | None = None

    def apply(self, q: Select[Any]) -> Select[Any]:
        c = events.c
        if self.since is not None:
            q = q.where(c.time >= self.since)
        if self.until is not None:
            q = q.where(c.time <= self.until)
        for col, val in (
            (c.app_name, self.app),
            (c.defender_id, self.defender),
            (c.type, self.type),
            (c.effect, self.effect),
            (c.rule, self.rule),
        ):
            if val:
                q = q.where(col == val)
        if self.severities:
            q = q.where(c.severity.in_(list(self.severities)))
        return q


class EventStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert

    def insert_batch(self, rows: Sequence[dict[str, Any]]) -> set[str]:
        """Insert rows (dicts of AuditEvent fields); return the event ids that were new."""
        if not rows:
            return set()
        now = time.time()
        values = [
            {
                "event_id": r["id"],
                "time": r["time"],
                "received_at": now,
                "defender_id": r["defender_id"],
                "app_id": r["app_id"],
                "app_name": r["app_name"],
                "org": r["org"],
                "space": r["space"],
                "type": r["type"],
                "effect": r["effect"],
                "severity": r["severity"],
                "rule": r["rule"],
                "control": r["control"],
                "message": r["message"],
                "body": r,
            }
            for r in rows
        ]
        stmt = (
            self._insert(events)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(events.c.event_id)
        )
        with self.engine.begin() as c:
            return {row[0] for row in c.execute(stmt, values)}

    def query(self, flt: EventFilter, *, limit: int, offset: int) -> list[dict[str, Any]]:
        q = flt.apply(select(events.c.body)).order_by(events.c.time.desc(), events.c.seq.desc())
        with self.engine.connect() as c:
            return [dict(r.body) for r in c.execute(q.limit(limit).offset(offset))]

    def count(self, flt: EventFilter) -> int:
        q = flt.apply(select(func.count()).select_from(events))
        with self.engine.connect() as c:
            return int(c.execute(q).scalar_one())

    def stream(self, flt: EventFilter, *, limit: int, chunk: int = 1000) -> Iterator[dict[str, Any]]:
        """Oldest first, in chunks (for the CSV download)."""
        q = flt.apply(select(events.c.body)).order_by(events.c.time, events.c.seq).limit(limit)
        with self.engine.connect() as c:
            result = c.execution_options(yield_per=chunk).execute(q)
            for r in result:
                yield dict(r.body)
