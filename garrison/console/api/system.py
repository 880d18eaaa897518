"""Liveness, version and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from garrison import __version__
from garrison.console.api.deps import Ctx, Reader

router = APIRouter(tags=["system"])
metrics_router = APIRouter()


@router.get("/_ping")
def ping() -> Response:
    """Unauthenticated liveness probe."""
    return Response("OK", media_type="text/plain")


@router.get("/version")
def version(c: Ctx, _p: Reader) -> dict[str, Any]:
    return {"version": __version__, "database": c.store.dialect}


@metrics_router.get("/metrics", include_in_schema=False)
def metrics(c: Ctx) -> Response:
    """Prometheus text format (unauthenticated, like most scrape targets; contains counts only)."""
    return Response(c.metrics.render(), media_type="text/plain; version=0.0.4")
