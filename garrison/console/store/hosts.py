"""Cells (hosts): posture per host, report history (CIS runs, host scans) and host events."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update

from garrison.console.store.db import insert_ignore
from garrison.console.store.tables import host_events, host_reports, hosts


class HostStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _insert_ignore(self, table: Any) -> Any:
        return insert_ignore(self.engine, table)

    def touch(self, name: str) -> dict[str, Any]:
        """The host's posture, creating the host on first contact."""
        now = time.time()
        with self.engine.begin() as c:
            c.execute(
                self._insert_ignore(hosts)
                .values(name=name, first_seen=now, last_seen=now, posture={})
                .on_conflict_do_nothing(index_elements=["name"])
            )
            c.execute(update(hosts).where(hosts.c.name == name).values(last_seen=now))
            row = c.execute(select(hosts.c.posture).where(hosts.c.name == name)).first()
        return dict(row[0]) if row else {}

    def set_posture(self, name: str, posture: dict[str, Any]) -> None:
        with self.engine.begin() as c:
            c.execute(update(hosts).where(hosts.c.name == name).values(posture=posture))

    def add_report(self, name: str, kind: str, summary: dict[str, Any], body: dict[str, Any]) -> int:
        with self.engine.begin() as c:
            res = c.execute(
                insert(host_reports).values(host=name, kind=kind, time=time.time(), summary=summary, body=body)
            )
            return int(res.inserted_primary_key[0])  # type: ignore[index]

    def add_events(self, name: str, events: Sequence[dict[str, Any]]) -> int:
        """Insert events not seen before (dedup per host and event id); how many were new."""
        if not events:
            return 0
        rows = [
            {"host": name, "id": e["id"], "time": e["time"], "type": e["type"], "action": e["action"],
             "severity": e["severity"], "user": e.get("user"), "path": e.get("path"),
             "message": e.get("message", ""), "body": e}
            for e in events
        ]
        ids = [r["id"] for r in rows]
        with self.engine.begin() as c:
            before = c.execute(
                select(func.count()).select_from(host_events).where(
                    host_events.c.host == name, host_events.c.id.in_(ids))
            ).scalar_one()
            c.execute(self._insert_ignore(host_events).on_conflict_do_nothing(index_elements=["host", "id"]), rows)
        return len(set(ids)) - int(before)

    def search(self, *, verdict: str | None, q: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        query = select(hosts).order_by(hosts.c.name).limit(limit).offset(offset)
        if q:
            query = query.where(hosts.c.name.contains(q, autoescape=True))
        with self.engine.connect() as c:
            rows = [dict(r) for r in c.execute(query).mappings()]
        if verdict:
            rows = [r for r in rows if r["posture"].get("verdict", "unknown") == verdict]
        return rows

    def get(self, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(hosts).where(hosts.c.name == name)).mappings().first()
        return dict(row) if row else None

    def reports(self, name: str, kind: str | None, limit: int, *, with_body: bool = False) -> list[dict[str, Any]]:
        cols = [host_reports.c.id, host_reports.c.kind, host_reports.c.time, host_reports.c.summary]
        if with_body:
            cols.append(host_reports.c.body)
        query = select(*cols).where(host_reports.c.host == name).order_by(host_reports.c.id.desc()).limit(limit)
        if kind:
            query = query.where(host_reports.c.kind == kind)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(query).mappings()]

    def events(
        self, name: str | None, *, type: str | None, since: float | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        query = select(host_events.c.body).order_by(host_events.c.time.desc()).limit(limit).offset(offset)
        if name:
            query = query.where(host_events.c.host == name)
        if type:
            query = query.where(host_events.c.type == type)
        if since is not None:
            query = query.where(host_events.c.time >= since)
        with self.engine.connect() as c:
            return [dict(r[0]) for r in c.execute(query)]

    def remove(self, name: str) -> bool:
        with self.engine.begin() as c:
            c.execute(delete(host_events).where(host_events.c.host == name))
            c.execute(delete(host_reports).where(host_reports.c.host == name))
            return bool(c.execute(delete(hosts).where(hosts.c.name == name)).rowcount)
