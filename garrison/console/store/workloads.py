"""The app containers cell defenders report: one workload per container, kept a day after it stops."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, and_, delete, func, insert, select, update

from garrison.console.store.tables import cell_workloads as w

GONE_KEPT_S = 24 * 3600.0
_FIELDS = ("app_id", "app_name", "org", "space", "app_guid", "instance", "rule", "protections",
           "started_at", "seen_at", "listening")  # fmt: skip


class WorkloadStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def apply(
        self, defender_id: str, up: Sequence[dict[str, Any]], gone: Sequence[str], *, full: bool
    ) -> None:
        """One transaction: `up` inserted or updated (running again if it had stopped), `gone` and,
        for a full list, every running container not in it marked stopped."""
        now = time.time()
        key = w.c.defender_id == defender_id
        with self.engine.begin() as c:
            known = set(c.execute(select(w.c.container_id).where(key)).scalars())
            for item in up:
                values = {k: item[k] for k in _FIELDS if k in item}
                cid = item["container_id"]
                if cid in known:
                    c.execute(
                        update(w)
                        .where(key, w.c.container_id == cid)
                        .values(**values, updated_at=now, gone_at=None)
                    )
                else:
                    c.execute(
                        insert(w).values(
                            defender_id=defender_id, container_id=cid, **values, first_seen=now, updated_at=now
                        )
                    )
            running = and_(key, w.c.gone_at.is_(None))
            if full:
                present = [item["container_id"] for item in up]
                c.execute(
                    update(w).where(running, w.c.container_id.not_in(present)).values(gone_at=now, updated_at=now)
                )
            if gone:
                c.execute(update(w).where(running, w.c.container_id.in_(list(gone))).values(gone_at=now, updated_at=now))
            c.execute(delete(w).where(key, w.c.gone_at < now - GONE_KEPT_S))

    def get(self, defender_id: str, container_id: str) -> dict[str, Any] | None:
        """One container a cell reported (running or stopped within the day)."""
        q = select(w).where(w.c.defender_id == defender_id, w.c.container_id == container_id)
        with self.engine.connect() as c:
            row = c.execute(q).mappings().first()
        return dict(row) if row is not None else None

    def list(
        self,
        *,
        defender_id: str | None = None,
        app: str | None = None,
        running: bool | None = None,
        limit: int = 500,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        q = select(w).order_by(w.c.defender_id, w.c.org, w.c.space, w.c.app_name, w.c.instance, w.c.container_id)
        if defender_id is not None:
            q = q.where(w.c.defender_id == defender_id)
        if app:
            q = q.where(w.c.app_name == app)
        if running is not None:
            q = q.where(w.c.gone_at.is_(None) if running else w.c.gone_at.is_not(None))
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q.limit(limit).offset(offset)).mappings()]

    def running_counts(self) -> dict[str, int]:
        """Running containers per cell defender."""
        q = select(w.c.defender_id, func.count()).where(w.c.gone_at.is_(None)).group_by(w.c.defender_id)
        with self.engine.connect() as c:
            return {d: n for d, n in c.execute(q)}
