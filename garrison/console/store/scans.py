"""Scan reports: from the staging buildpack, the blobstore rescanner and `garrison scan --report-to`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, func, insert, or_, select

from garrison.console.store.tables import scans

_LIST_COLS = [
    scans.c.id,
    scans.c.digest,
    scans.c.verdict,
    scans.c.app_name,
    scans.c.app_guid,
    scans.c.org,
    scans.c.space,
    scans.c.source,
    scans.c.blob,
    scans.c.db_revision,
    scans.c.db_updated_at,
    scans.c.created_at,
    scans.c.summary,
]


@dataclass(frozen=True)
class ScanKey:
    """What a report is about: the droplet (content digest) and the CF app it was staged for."""

    digest: str
    app_guid: str = ""
    app_name: str = ""
    org: str = ""
    space: str = ""
    source: str = ""
    blob: str = ""
    db_revision: str = ""
    db_updated_at: float | None = None


class ScanStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, key: ScanKey, verdict: str, summary: dict[str, Any], body: dict[str, Any]) -> int:
        with self.engine.begin() as c:
            res = c.execute(
                insert(scans).values(
                    digest=key.digest,
                    verdict=verdict,
                    app_name=key.app_name,
                    app_guid=key.app_guid,
                    org=key.org,
                    space=key.space,
                    source=key.source,
                    blob=key.blob,
                    db_revision=key.db_revision,
                    db_updated_at=key.db_updated_at,
                    created_at=time.time(),
                    summary=summary,
                    body=body,
                )
            )
            return int(res.inserted_primary_key[0])  # type: ignore[index]

    def list(
        self,
        *,
        app: str | None = None,
        digest: str | None = None,
        app_guid: str | None = None,
        verdict: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        q = select(*_LIST_COLS).order_by(scans.c.id.desc()).limit(limit).offset(offset)
        if app:
            q = q.where(scans.c.app_name == app)
        if digest:
            q = q.where(scans.c.digest == digest)
        if app_guid:
            q = q.where(scans.c.app_guid == app_guid)
        if verdict:
            q = q.where(scans.c.verdict == verdict)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def latest_per_droplet(self, *, limit: int = 500, offset: int = 0) -> list[dict[str, Any]]:
        """The newest report of each (app, droplet) pair, newest first: the 'scan results' view."""
        newest = (
            select(func.max(scans.c.id).label("id"))
            .group_by(scans.c.app_guid, scans.c.app_name, scans.c.digest)
            .subquery()
        )
        q = (
            select(*_LIST_COLS)
            .where(scans.c.id.in_(select(newest.c.id)))
            .order_by(scans.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def get(self, scan_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(scans).where(scans.c.id == scan_id)).mappings().first()
        return dict(row) if row else None

    def candidates(self, digest: str, app_guid: str = "", limit: int = 200) -> list[dict[str, Any]]:
        """Reports about this droplet for this app or for no app in particular (all apps when no guid
        is given), newest first."""
        where = scans.c.digest == digest
        if app_guid:
            where = and_(where, or_(scans.c.app_guid == app_guid, scans.c.app_guid == ""))
        q = select(*_LIST_COLS).where(where).order_by(scans.c.id.desc()).limit(limit)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def latest_for_digest(self, digest: str) -> dict[str, Any] | None:
        q = select(*_LIST_COLS).where(scans.c.digest == digest).order_by(scans.c.id.desc()).limit(1)
        with self.engine.connect() as c:
            row = c.execute(q).mappings().first()
        return dict(row) if row else None
