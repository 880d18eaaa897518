"""The admin audit trail: who changed what, when."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, insert, select

from garrison.console.store.tables import mgmt_audits


class MgmtAuditStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
        self, username: str, action: str, target: str = "", detail: dict[str, Any] | None = None
    ) -> None:
        with self.engine.begin() as c:
            c.execute(
                insert(mgmt_audits).values(
                    time=time.time(),
                    username=username,
                    action=action,
                    target=target[:512],
                    detail=detail or {},
                )
            )

    def list(self, *, limit: int, offset: int, username: str | None = None) -> list[dict[str, Any]]:
        q = select(mgmt_audits).order_by(mgmt_audits.c.id.desc()).limit(limit).offset(offset)
        if username:
            q = q.where(mgmt_audits.c.username == username)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]
