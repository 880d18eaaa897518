"""Liveness, version and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from garrison import __version__
from garrison.console.api.deps import Ctx, Reader
from garrison.console.api.docs import public_or_reader

router = APIRouter(tags=["system"])
metrics_router = APIRouter()


@router.get(
    "/_ping",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"example": "OK"}}}},
)
def ping() -> PlainTextResponse:
    """Unauthenticated liveness probe: `OK` as text/plain."""
    return PlainTextResponse("OK")


@router.get("/version")
def version(c: Ctx, _p: Reader) -> dict[str, Any]:
    return {"version": __version__, "database": c.store.dialect}


@metrics_router.get("/metrics", include_in_schema=False)
def metrics(c: Ctx, _a: Annotated[None, public_or_reader("metrics")]) -> Response:
    """Prometheus text format; needs a token (Prometheus `authorization: credentials_file`) unless
    the console runs with --public-metrics."""
    return Response(c.metrics.render(), media_type="text/plain; version=0.0.4")
