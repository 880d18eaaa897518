"""Defenders, enrolment tokens and the seen-nonce table that refuses replayed enrolments."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from garrison.console.store.cluster import bump
from garrison.console.store.tables import defenders, enrolment_tokens, seen_nonces

IDENTITY_FIELDS = ("app_id", "app_name", "org", "space", "app_guid", "instance")


class DefenderStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- enrolment ---------------------------------------------------------------------------
    def add_enrolment_token(
        self, token_hash: str, created_by: str, scope: dict[str, str] | None = None
    ) -> None:
        with self.engine.begin() as c:
            c.execute(
                insert(enrolment_tokens).values(
                    token_hash=token_hash,
                    created_at=time.time(),
                    created_by=created_by,
                    revoked=False,
                    scope=scope or None,
                )
            )

    def enrolment_token(self, token_hash: str) -> dict[str, Any] | None:
        """The valid (not revoked) token with this hash: {id, scope}; None otherwise."""
        q = select(enrolment_tokens.c.id, enrolment_tokens.c.revoked, enrolment_tokens.c.scope).where(
            enrolment_tokens.c.token_hash == token_hash
        )
        with self.engine.connect() as c:
            row = c.execute(q).first()
        if row is None or row.revoked:
            return None
        return {"id": row.id, "scope": dict(row.scope or {})}

    def enrolment_token_valid(self, token_hash: str) -> bool:
        return self.enrolment_token(token_hash) is not None

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

    def register(
        self,
        prefix: str,
        fingerprint: str,
        identity: dict[str, Any],
        token_id: int | None,
        defender_type: str = "app-embedded",
    ) -> str:
        """The id for a defender holding the key with this fingerprint, created if new.

        The id is `<prefix>-<first hex digits of the fingerprint>`: a different key always gets a
        different id (on a prefix collision more digits are used), and the same key gets its own id
        back (a re-enrolment that proves it holds the key). A revoked key stays revoked."""
        for digits in (8, 16, 64):
            defender_id = f"{prefix}-{fingerprint[:digits]}"
            row = self._id_owner(defender_id)
            if row is None:
                try:
                    with self.engine.begin() as c:
                        c.execute(
                            insert(defenders).values(
                                id=defender_id,
                                **identity,
                                kernel={},
                                stats={},
                                enrolled_at=time.time(),
                                key_fingerprint=fingerprint,
                                token_id=token_id,
                                defender_type=defender_type,
                            )
                        )
                    return defender_id
                except IntegrityError:  # created concurrently: by the same key, or another one?
                    row = self._id_owner(defender_id)
                    if row is None:
                        raise
            if row.key_fingerprint == fingerprint:
                if row.revoked:
                    raise PermissionError("this key belongs to a defender an operator removed")
                return defender_id
        raise RuntimeError("no free defender id")  # 64 hex digits collide only for the same key

    def _id_owner(self, defender_id: str) -> Any:
        with self.engine.connect() as c:
            return c.execute(
                select(defenders.c.key_fingerprint, defenders.c.revoked).where(defenders.c.id == defender_id)
            ).first()

    def connected(self, defender_id: str, values: dict[str, Any]) -> dict[str, Any]:
        """Mark connected and record what the defender reports; return its bound app identity.

        The identity fields (app, org, space, app guid, instance) are bound at enrolment; a defender
        enrolled without them (an unscoped bundle, an old defender) binds them on its first hello.
        Later hellos can change versions, hostname and kernel features, never the identity."""
        bound = self.connection_changes([(defender_id, values)])[0]
        assert bound is not None
        return bound

    def disconnected(self, defender_id: str, replica_id: str | None = None) -> None:
        self.connection_changes([(defender_id, None)], replica_id=replica_id)

    def connection_changes(
        self, changes: Sequence[tuple[str, dict[str, Any] | None]], *, replica_id: str | None = None
    ) -> list[dict[str, Any] | None]:
        """Connects (id, hello values) and disconnects (id, None) in one transaction, in order;
        the bound identity of each connect (None for a disconnect).

        With `replica_id` (the console replica writing), connects record it as the holder and a
        disconnect applies only while it still holds the defender: one that already reconnected to
        another replica stays connected there."""
        now = time.time()
        out: list[dict[str, Any] | None] = []
        with self.engine.begin() as c:
            for defender_id, values in changes:
                if values is None:
                    q = update(defenders).where(defenders.c.id == defender_id)
                    if replica_id is not None:
                        q = q.where(defenders.c.replica_id == replica_id)
                    c.execute(q.values(connected=False, last_seen=now))
                    out.append(None)
                    continue
                if replica_id is not None:
                    values = {**values, "replica_id": replica_id}
                out.append(self._connect(c, defender_id, values, now))
        return out

    @staticmethod
    def _connect(c: Connection, defender_id: str, values: dict[str, Any], now: float) -> dict[str, Any]:
        row = (
            c.execute(select(*(defenders.c[k] for k in IDENTITY_FIELDS)).where(defenders.c.id == defender_id))
            .mappings()
            .first()
        )
        if row is None:  # certificate from an earlier database (e.g. restored CA): re-register
            c.execute(
                insert(defenders).values(
                    id=defender_id, **values, stats={}, connected=True, last_seen=now, enrolled_at=now
                )
            )
            return {k: values.get(k, "") for k in IDENTITY_FIELDS}
        bound = dict(row)
        if bound["app_name"] or bound["app_guid"]:
            values = {k: v for k, v in values.items() if k not in IDENTITY_FIELDS}
        else:
            bound = {k: values.get(k, bound[k]) for k in IDENTITY_FIELDS}
        c.execute(
            update(defenders)
            .where(defenders.c.id == defender_id)
            .values(**values, connected=True, last_seen=now)
        )
        return bound

    def record_heartbeats(self, beats: Sequence[tuple[str, dict[str, Any], float]]) -> None:
        """(defender id, stats, time) of many heartbeats in one transaction (one executemany).

        Connection state (`connected`) is not touched: connects and disconnects are written when
        they happen, so a late heartbeat can neither resurrect a closed connection nor a revoked
        defender."""
        if not beats:
            return
        q = (
            update(defenders)
            .where(defenders.c.id == bindparam("b_id"), defenders.c.revoked.is_(False))
            .values(stats=bindparam("b_stats"), last_seen=bindparam("b_seen"))
        )
        with self.engine.begin() as c:
            c.execute(q, [{"b_id": i, "b_stats": s, "b_seen": t} for i, s, t in beats])

    def mark_all_disconnected(self) -> None:
        """At start-up: connections of a previous run of *this* console are gone (single-node SQLite)."""
        with self.engine.begin() as c:
            c.execute(update(defenders).values(connected=False))

    def revoke(self, defender_id: str) -> bool:
        with self.engine.begin() as c:
            q = update(defenders).where(defenders.c.id == defender_id, defenders.c.revoked.is_(False))
            done = c.execute(q.values(revoked=True, connected=False)).rowcount > 0
            if done:
                bump(c, "defenders")  # the replica holding its connection closes it
            return done

    def defender_type(self, defender_id: str) -> str:
        with self.engine.connect() as c:
            row = c.execute(select(defenders.c.defender_type).where(defenders.c.id == defender_id)).first()
        return str(row.defender_type) if row else ""

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
