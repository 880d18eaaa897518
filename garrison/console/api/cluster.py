"""Console replicas sharing this console's database: who is alive and holds how many defenders."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from garrison.console.api.deps import Ctx, Reader

router = APIRouter(prefix="/cluster", tags=["cluster"])


class Replica(BaseModel):
    id: str
    hostname: str
    pid: int
    url: str
    ws_address: str
    started_at: float
    heartbeat_at: float
    heartbeat_age_s: float
    defenders_connected: int
    this: bool
    """the replica answering this request"""


class ClusterOut(BaseModel):
    replica_id: str
    database: str
    lease_s: float
    listening: bool
    """PostgreSQL: this replica's change listener is connected (always false on SQLite)"""
    replicas: list[Replica]


@router.get("/replicas", response_model=ClusterOut)
def replicas(c: Ctx, _p: Reader) -> Any:
    """Replicas whose lease has not been reaped yet, oldest first, with the defenders each holds."""
    me = c.cluster.replica_id if c.cluster is not None else ""
    rows = c.store.cluster.replicas()
    return {
        "replica_id": me,
        "database": c.store.dialect,
        "lease_s": c.cluster.lease_s if c.cluster is not None else 0.0,
        "listening": bool(c.cluster is not None and c.cluster.listening),
        "replicas": [{**r, "this": r["id"] == me} for r in rows],
    }
