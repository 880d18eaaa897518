"""Versioned policy documents (runtime, assurance): every change is a new row, the newest wins."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from garrison.console.store.cluster import bump
from garrison.console.store.tables import policies


class PolicyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def current(self, kind: str) -> tuple[int, dict[str, Any]] | None:
        q = (
            select(policies.c.revision, policies.c.body)
            .where(policies.c.kind == kind)
            .order_by(policies.c.revision.desc())
            .limit(1)
        )
        with self.engine.connect() as c:
            row = c.execute(q).first()
        return (int(row.revision), dict(row.body)) if row else None

    def save(self, kind: str, body: dict[str, Any], author: str) -> int:
        """Store `body` as the next revision; retried when a replica took the same revision concurrently."""
        for _ in range(20):
            cur = self.current(kind)
            revision = (cur[0] if cur else 0) + 1
            try:
                with self.engine.begin() as c:
                    c.execute(
                        insert(policies).values(
                            kind=kind,
                            revision=revision,
                            body={**body, "revision": revision} if "revision" in body else body,
                            created_at=time.time(),
                            author=author,
                        )
                    )
                    bump(c, "policy")
                return revision
            except IntegrityError:
                continue
        raise RuntimeError("could not store the policy: too many concurrent updates")

    def history(self, kind: str, limit: int = 50) -> list[dict[str, Any]]:
        q = (
            select(policies.c.revision, policies.c.created_at, policies.c.author)
            .where(policies.c.kind == kind)
            .order_by(policies.c.revision.desc())
            .limit(limit)
        )
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def revision(self, kind: str, revision: int) -> dict[str, Any] | None:
        q = select(policies.c.body).where(policies.c.kind == kind, policies.c.revision == revision)
        with self.engine.connect() as c:
            row = c.execute(q).first()
        return dict(row.body) if row else None
