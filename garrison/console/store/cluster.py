"""Several console replicas on one database: change versions, replica leases, routed commands.

A change another replica must act on (a policy, the alert settings, users and tokens, a revoked
defender, a command for a defender it holds) bumps its topic's version in the same transaction as
the change itself (`bump`). On PostgreSQL the bump also sends `NOTIFY garrison_changes`, delivered
at commit; the notification only wakes the other replicas, which read the versions and act on the
topics that moved — so a notification lost while a listener reconnects is caught up by comparing
versions, never by trusting the notification.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, or_, select, update

from garrison.console.store.db import db_now
from garrison.console.store.tables import cluster_commands, cluster_versions, console_replicas, defenders

NOTIFY_CHANNEL = "garrison_changes"
AUDITS_CHANNEL = "garrison_audits"
"""a replica stored new audits: wakes the other replicas' live audit streams (nothing to catch up)"""
TOPICS = ("policy", "settings", "auth", "defenders", "commands")


def bump(conn: Connection, topic: str) -> None:
    """Record a change of `topic` inside the caller's transaction (and wake the other replicas)."""
    if topic not in TOPICS:
        raise ValueError(f"unknown cluster topic {topic!r}")
    conn.execute(
        update(cluster_versions)
        .where(cluster_versions.c.topic == topic)
        .values(version=cluster_versions.c.version + 1)
    )
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_notify(NOTIFY_CHANNEL, topic)))


class ClusterStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- change versions ---------------------------------------------------------------------
    def versions(self) -> dict[str, int]:
        with self.engine.connect() as c:
            return {r.topic: int(r.version) for r in c.execute(select(cluster_versions))}

    def bump(self, topic: str) -> None:
        with self.engine.begin() as c:
            bump(c, topic)

    def announce_audits(self) -> None:
        """PostgreSQL: tell the other replicas' live streams that audits were stored (committed)."""
        with self.engine.begin() as c:
            c.execute(select(func.pg_notify(AUDITS_CHANNEL, "")))

    # -- replicas and leases -----------------------------------------------------------------
    def register(self, replica_id: str, *, hostname: str, pid: int, url: str, ws_address: str) -> None:
        with self.engine.begin() as c:
            now = db_now(c)
            c.execute(delete(console_replicas).where(console_replicas.c.id == replica_id))
            c.execute(
                insert(console_replicas).values(
                    id=replica_id,
                    hostname=hostname[:256],
                    pid=pid,
                    url=url[:512],
                    ws_address=ws_address[:512],
                    started_at=now,
                    heartbeat_at=now,
                )
            )

    def heartbeat(self, replica_id: str) -> bool:
        """Renew the lease; False when the row is gone (the others declared this replica dead)."""
        with self.engine.begin() as c:
            q = update(console_replicas).where(console_replicas.c.id == replica_id)
            return c.execute(q.values(heartbeat_at=db_now(c))).rowcount > 0

    def reassert(self, replica_id: str, defender_ids: Iterable[str]) -> None:
        """After a lost lease: the defenders this replica still holds are connected, here."""
        ids = list(defender_ids)
        with self.engine.begin() as c:
            for i in range(0, len(ids), 500):
                c.execute(
                    update(defenders)
                    .where(defenders.c.id.in_(ids[i : i + 500]))
                    .values(connected=True, replica_id=replica_id)
                )

    def reap(self, lease_s: float) -> int:
        """Replicas whose lease expired are dead: their defenders are disconnected (unless they
        already reconnected elsewhere), their unfinished commands fail. Returns defenders marked."""
        with self.engine.begin() as c:
            cutoff = db_now(c) - lease_s
            dead = [
                r.id
                for r in c.execute(
                    select(console_replicas.c.id).where(console_replicas.c.heartbeat_at < cutoff)
                )
            ]
            if dead:
                c.execute(delete(console_replicas).where(console_replicas.c.id.in_(dead)))
            alive = select(console_replicas.c.id)
            marked = c.execute(
                update(defenders)
                .where(
                    defenders.c.connected.is_(True),
                    or_(defenders.c.replica_id.is_(None), defenders.c.replica_id.not_in(alive)),
                )
                .values(connected=False)
            ).rowcount
            failed = c.execute(
                update(cluster_commands)
                .where(cluster_commands.c.state != "done", cluster_commands.c.replica_id.not_in(alive))
                .values(state="done", ok=False, error="replica_gone", finished_at=time.time())
            ).rowcount
            c.execute(delete(cluster_commands).where(cluster_commands.c.created_at < time.time() - 3600))
            if failed:
                bump(c, "commands")
            return int(marked)

    def release(self, replica_id: str) -> None:
        """Clean shutdown: this replica's defenders are disconnected now, not at lease expiry."""
        with self.engine.begin() as c:
            c.execute(
                update(defenders)
                .where(defenders.c.replica_id == replica_id, defenders.c.connected.is_(True))
                .values(connected=False, last_seen=time.time())
            )
            c.execute(delete(console_replicas).where(console_replicas.c.id == replica_id))

    def replicas(self) -> list[dict[str, Any]]:
        counts = (
            select(defenders.c.replica_id, func.count().label("n"))
            .where(defenders.c.connected.is_(True))
            .group_by(defenders.c.replica_id)
            .subquery()
        )
        with self.engine.connect() as c:
            now = (
                c.execute(select(db_now(c))).scalar_one() if c.dialect.name == "postgresql" else time.time()
            )
            rows = c.execute(
                select(console_replicas, func.coalesce(counts.c.n, 0).label("defenders_connected"))
                .outerjoin(counts, counts.c.replica_id == console_replicas.c.id)
                .order_by(console_replicas.c.started_at)
            ).mappings()
            return [{**r, "heartbeat_age_s": round(float(now) - r["heartbeat_at"], 3)} for r in rows]

    def holder(self, defender_id: str, lease_s: float) -> str | None:
        """The live replica holding this defender's connection, if any."""
        with self.engine.connect() as c:
            row = c.execute(
                select(defenders.c.replica_id)
                .join(console_replicas, console_replicas.c.id == defenders.c.replica_id)
                .where(
                    defenders.c.id == defender_id,
                    defenders.c.connected.is_(True),
                    console_replicas.c.heartbeat_at >= db_now(c) - lease_s,
                )
            ).first()
        return str(row.replica_id) if row else None

    def revoked_held_by(self, replica_id: str) -> list[str]:
        with self.engine.connect() as c:
            q = select(defenders.c.id).where(
                defenders.c.replica_id == replica_id, defenders.c.revoked.is_(True)
            )
            return [r.id for r in c.execute(q)]

    # -- commands routed to the holder -------------------------------------------------------
    def submit_command(
        self, command_id: str, defender_id: str, replica_id: str, name: str, args: dict[str, Any]
    ) -> None:
        with self.engine.begin() as c:
            c.execute(
                insert(cluster_commands).values(
                    id=command_id,
                    defender_id=defender_id,
                    replica_id=replica_id,
                    name=name,
                    args=args,
                    state="pending",
                    created_at=time.time(),
                )
            )
            bump(c, "commands")

    def claim_commands(self, replica_id: str) -> list[dict[str, Any]]:
        """Pending commands for this replica's defenders, marked running (each claimed once)."""
        with self.engine.begin() as c:
            rows = c.execute(
                update(cluster_commands)
                .where(cluster_commands.c.replica_id == replica_id, cluster_commands.c.state == "pending")
                .values(state="running")
                .returning(
                    cluster_commands.c.id,
                    cluster_commands.c.defender_id,
                    cluster_commands.c.name,
                    cluster_commands.c.args,
                )
            ).mappings()
            return [dict(r) for r in rows]

    def finish_command(self, command_id: str, *, ok: bool, data: Any, error: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                update(cluster_commands)
                .where(cluster_commands.c.id == command_id, cluster_commands.c.state != "done")
                .values(state="done", ok=ok, data=data, error=error[:4096], finished_at=time.time())
            )
            bump(c, "commands")

    def command(self, command_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = (
                c.execute(select(cluster_commands).where(cluster_commands.c.id == command_id))
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def drop_command(self, command_id: str) -> None:
        with self.engine.begin() as c:
            c.execute(delete(cluster_commands).where(cluster_commands.c.id == command_id))
