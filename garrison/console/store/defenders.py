"""Defenders, enrolment tokens and the seen-nonce table that refuses replayed enrolments."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from garrison.console.store.tables import defenders, enrolment_tokens, seen_nonces

_PUBLIC = [c for c in defenders.c if c.name != "stats"] + [defenders.c.stats]


class DefenderStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- enrolment ---------------------------------------------------------------------------
    def add_enrolment_token(self, token_hash: str, created_by: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                insert(enrolment_tokens).values(
                    token_hash=token_hash, created_at=time.time(), created_by=created_by, revoked=False
                )
            )

    def enrolment_token_valid(self, token_hash: str) -> bool:
        q = select(enrolment_tokens.c.revoked).where(enrolment_tokens.c.token_hash == token_hash)
        with self.engine.connect() as c:
            row = c.execute(q).first()
        return row is not None and not row.revoked

    def revoke_enrolment_tokens(self) -> int:
        with self.engine.begin() as c:
            q = update(enrolment_tokens).where(enrolment_tokens.c.revoked.is_(False))
            return c.execute(q.values(revoked=True)).rowcount

    def claim_nonce(self, nonce: str, now: float, forget_before: float) -> bool:
        """Record `nonce`; False if it was seen before (a replay). Old nonces are forgotten: the
        timestamp window refuses them anyway."""
        try:
            with self.engine.begin() as c:
                c.execute(delete(seen_nonces).where(seen_nonces.c.seen_at < forget_before))
                c.execute(insert(seen_nonces).values(nonce=nonce, seen_at=now))
            return True
        except IntegrityError:
            return False

    # -- defenders ---------------------------------------------------------------------------
    def exists(self, defender_id: str) -> dict[str, Any] | None:
        q = select(defenders.c.id, defenders.c.revoked).where(defenders.c.id == defender_id)
        with self.engine.connect() as c:
            row = c.execute(q).mappings().first()
        return dict(row) if row else None

    def create(self, defender_id: str) -> None:
        with self.engine.begin() as c:
            c.execute(insert(defenders).values(id=defender_id, kernel={}, stats={}, enrolled_at=time.time()))

    def connected(self, defender_id: str, values: dict[str, Any]) -> None:
        now = time.time()
        with self.engine.begin() as c:
            n = c.execute(
                update(defenders)
                .where(defenders.c.id == defender_id)
                .values(**values, connected=True, last_seen=now)
            ).rowcount
            if n == 0:  # certificate from an earlier database (e.g. restored CA): re-register
                c.execute(
                    insert(defenders).values(
                        id=defender_id, **values, stats={}, connected=True, last_seen=now, enrolled_at=now
                    )
                )

    def disconnected(self, defender_id: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                update(defenders)
                .where(defenders.c.id == defender_id)
                .values(connected=False, last_seen=time.time())
            )

    def heartbeat(self, defender_id: str, stats: dict[str, Any]) -> None:
        with self.engine.begin() as c:
            c.execute(
                update(defenders)
                .where(defenders.c.id == defender_id)
                .values(stats=stats, last_seen=time.time(), connected=True)
            )

    def mark_all_disconnected(self) -> None:
        """At start-up: connections of a previous run of *this* console are gone (single-node SQLite)."""
        with self.engine.begin() as c:
            c.execute(update(defenders).values(connected=False))

    def revoke(self, defender_id: str) -> bool:
        with self.engine.begin() as c:
            q = update(defenders).where(defenders.c.id == defender_id, defenders.c.revoked.is_(False))
            return c.execute(q.values(revoked=True, connected=False)).rowcount > 0

    def is_revoked(self, defender_id: str) -> bool:
        with self.engine.connect() as c:
            row = c.execute(select(defenders.c.revoked).where(defenders.c.id == defender_id)).first()
        return bool(row and row.revoked)

    def get(self, defender_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(defenders).where(defenders.c.id == defender_id)).mappings().first()
        return dict(row) if row else None

    def list(
        self, *, limit: int, offset: int, app: str | None, connected: bool | None, include_revoked: bool
    ) -> list[dict[str, Any]]:
        q = select(defenders).order_by(defenders.c.app_name, defenders.c.id).limit(limit).offset(offset)
        if app:
            q = q.where(defenders.c.app_name == app)
        if connected is not None:
            q = q.where(defenders.c.connected.is_(connected))
        if not include_revoked:
            q = q.where(defenders.c.revoked.is_(False))
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def summary(self) -> dict[str, int]:
        q = select(defenders.c.connected, defenders.c.revoked, func.count()).group_by(
            defenders.c.connected, defenders.c.revoked
        )
        out = {"total": 0, "connected": 0, "disconnected": 0, "revoked": 0}
        with self.engine.connect() as c:
            for connected_, revoked, n in c.execute(q):
                if revoked:
                    out["revoked"] += n
                    continue
                out["total"] += n
                out["connected" if connected_ else "disconnected"] += n
        return out
