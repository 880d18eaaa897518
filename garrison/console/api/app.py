"""The FastAPI application: /api/v1 routers, the web UI at '/', /metrics, error mapping and guards."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Scope

from garrison import __version__
from garrison.console.api import (
    audits,
    auth,
    cluster,
    defenders,
    docs,
    hosts,
    learning,
    policies,
    scans,
    settings,
    system,
)
from garrison.console.api.limits import RequestGuard, security_headers, status_counter
from garrison.console.context import ConsoleContext
from garrison.console.services.errors import Conflict, Invalid, NotFound, invalid_detail
from garrison.console.services.throttle import Throttled

API_PREFIX = "/api/v1"
log = logging.getLogger("garrison.console")


def create_app(ctx: ConsoleContext) -> FastAPI:
    app = FastAPI(
        title="Garrison Console API",
        version=__version__,
        openapi_url=None,  # served by api/docs.py, behind a token unless made public
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    api = APIRouter(prefix=API_PREFIX, responses=ERROR_RESPONSES)
    for module in (system, auth, policies, defenders, audits, scans, settings, hosts, learning, cluster):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(system.metrics_router)
    app.include_router(docs.router)

    for exc_type, status in ((NotFound, 404), (Conflict, 409)):
        app.add_exception_handler(exc_type, _handler(status))
    app.add_exception_handler(Invalid, _invalid)
    app.add_exception_handler(Throttled, _throttled)
    app.add_exception_handler(StarletteHTTPException, _http_error)

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


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Invalid)
    return JSONResponse({"detail": invalid_detail(exc.loc, str(exc))}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    """405 answers name every method the path has (Starlette names only the first route's)."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        allowed = allowed_methods(request.app, request.scope)
        if allowed:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
    return await http_exception_handler(request, exc)


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method the OpenAPI document lists for this path (+ HEAD with GET); [] if not an API path.

    From the document rather than the router: FastAPI nests included routers and stops at the first
    route whose path matches, so Starlette's own Allow names only that route's methods."""
    table = getattr(app.state, "allow_table", None)
    if table is None:
        table = []
        for path, ops in app.openapi().get("paths", {}).items():
            pattern = re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path)) + "$")
            methods = {m.upper() for m in ops if m.lower() in _HTTP_METHODS}
            if "GET" in methods:
                methods.add("HEAD")
            table.append((pattern, methods))
        app.state.allow_table = table
    path = scope.get("path", "")
    matches = [(pattern, methods) for pattern, methods in table if pattern.match(path)]
    literal = [methods for pattern, methods in matches if "[^/]+" not in pattern.pattern]
    # `/defenders/summary` is its own resource, not a `/defenders/{defender_id}`.
    return sorted(set().union(*literal) if literal else {m for _, methods in matches for m in methods})


_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


class ErrorOut(BaseModel):
    detail: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorOut,
        "description": "Malformed request (bad Content-Length, NUL bytes in a non-JSON body)",
    },
    401: {
        "model": ErrorOut,
        "description": "Missing, wrong or expired credentials; or too many failed logins from this address or "
        "for this user, with Retry-After (seconds): the credentials were not checked",
        "headers": {
            "Retry-After": {"schema": {"type": "integer"}, "description": "seconds (throttled only)"}
        },
    },
    403: {"model": ErrorOut, "description": "The caller's role may not do this"},
    404: {"model": ErrorOut, "description": "No such object"},
    409: {"model": ErrorOut, "description": "Conflicts with the current state (e.g. the last admin)"},
    413: {"model": ErrorOut, "description": "Request body too large"},
}


async def _throttled(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Throttled)
    # 401, not 429: the credentials were not even checked, so the request is unauthenticated, and
    # clients (and API fuzzers' auth checks) expect 401/403 for bad credentials; Retry-After says when.
    return JSONResponse(
        {"detail": str(exc)},
        status_code=401,
        headers={"Retry-After": str(exc.retry_after), "WWW-Authenticate": 'Basic realm="garrison", Bearer'},
    )


def asgi(ctx: ConsoleContext) -> ASGIApp:
    """The app wrapped in the request guards (size/NUL) and the status counter."""
    inc = lambda status: ctx.metrics.http_requests.labels(status).inc()  # noqa: E731
    return security_headers(status_counter(RequestGuard(create_app(ctx)), inc))
