"""Scan reports posted by the droplet scanner."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, insert, select

from garrison.console.store.tables import scans

_LIST_COLS = [
    scans.c.id,
    scans.c.digest,
    scans.c.verdict,
    scans.c.app_name,
    scans.c.created_at,
    scans.c.summary,
]


class ScanStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(
        self, digest: str, verdict: str, app_name: str, summary: dict[str, Any], body: dict[str, Any]
    ) -> int:
        with self.engine.begin() as c:
            res = c.execute(
                insert(scans).values(
                    digest=digest,
                    verdict=verdict,
                    app_name=app_name,
                    created_at=time.time(),
                    summary=summary,
                    body=body,
                )
            )
            return int(res.inserted_primary_key[0])  # type: ignore[index]

    def list(self, *, app: str | None, digest: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        q = select(*_LIST_COLS).order_by(scans.c.id.desc()).limit(limit).offset(offset)
        if app:
            q = q.where(scans.c.app_name == app)
        if digest:
            q = q.where(scans.c.digest == digest)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def get(self, scan_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(scans).where(scans.c.id == scan_id)).mappings().first()
        return dict(row) if row else None

    def latest_for_digest(self, digest: str) -> dict[str, Any] | None:
        q = select(*_LIST_COLS).where(scans.c.digest == digest).order_by(scans.c.id.desc()).limit(1)
        with self.engine.connect() as c:
            row = c.execute(q).mappings().first()
        return dict(row) if row else None
