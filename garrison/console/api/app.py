"""The FastAPI application: /api/v1 routers, the web UI at '/', /metrics, error mapping and guards."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from garrison import __version__
from garrison.console.api import audits, auth, defenders, hosts, policies, scans, settings, system
from garrison.console.api.limits import RequestGuard, status_counter
from garrison.console.context import ConsoleContext
from garrison.console.services.errors import Conflict, Invalid, NotFound

API_PREFIX = "/api/v1"
log = logging.getLogger("garrison.console")


def create_app(ctx: ConsoleContext) -> FastAPI:
    app = FastAPI(
        title="Garrison Console API",
        version=__version__,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.ctx = ctx
    api = APIRouter(prefix=API_PREFIX)
    for module in (system, auth, policies, defenders, audits, scans, settings, hosts):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(system.metrics_router)

    for exc_type, status in ((NotFound, 404), (Conflict, 409), (Invalid, 422)):
        app.add_exception_handler(exc_type, _handler(status))

    try:
        from garrison.console.ui import router as ui_router
    except Exception:  # a broken UI build must not take the API (and the defenders) down with it
        log.exception("the web UI failed to load; serving the API only")
    else:
        app.include_router(ui_router)
    return app


def _handler(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return handle


def asgi(ctx: ConsoleContext) -> ASGIApp:
    """The app wrapped in the request guards (size/NUL) and the status counter."""
    inc = lambda status: ctx.metrics.http_requests.labels(status).inc()  # noqa: E731
    return status_counter(RequestGuard(create_app(ctx)), inc)
