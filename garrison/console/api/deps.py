"""Request dependencies: the console context and the authenticated principal (Basic or Bearer)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBearer

from garrison.console.context import ConsoleContext
from garrison.console.services.auth import Principal
from garrison.console.services.client_address import client_address
from garrison.console.services.throttle import Throttled

# Declared for the OpenAPI document (so clients and schemathesis know both schemes); parsing is ours.
_basic = HTTPBasic(auto_error=False)
_bearer = HTTPBearer(auto_error=False)
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="garrison", Bearer'}


def ctx(request: Request) -> ConsoleContext:
    return request.app.state.ctx


Ctx = Annotated[ConsoleContext, Depends(ctx)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers=_CHALLENGE)


def login_address(request: Request, c: ConsoleContext) -> str:
    """The address login throttling keys on (see services/client_address.py for what is trusted)."""
    peer = request.client.host if request.client else ""
    return client_address(peer, request.headers.getlist("x-forwarded-for"), c.trusted_proxies)


def principal(
    request: Request,
    c: Ctx,
    _b: Annotated[object, Depends(_basic)] = None,
    _t: Annotated[object, Depends(_bearer)] = None,
) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and value.strip():
        p = c.auth.check_token(value.strip())
        if p is None:
            raise _unauthorized("invalid or expired token")
        return p
    if scheme == "basic" and value.strip():
        try:
            username, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, ValueError):
            raise _unauthorized("malformed Basic credentials") from None
        address = login_address(request, c)
        p = c.auth.login(username, password, address, via="basic") if sep else None
        if p is None:
            raise _unauthorized("wrong username or password")
        return p
    raise _unauthorized("authentication required: HTTP Basic or Bearer token")


def writer(p: Annotated[Principal, Depends(principal)]) -> Principal:
    if not p.can_write:
        raise HTTPException(status_code=403, detail=f"role {p.role!r} is read-only")
    return p


def admin(p: Annotated[Principal, Depends(principal)]) -> Principal:
    if p.role != "admin":
        raise HTTPException(status_code=403, detail="admin role required")
    return p


Reader = Annotated[Principal, Depends(principal)]
Writer = Annotated[Principal, Depends(writer)]
Admin = Annotated[Principal, Depends(admin)]


def still_allowed(request: Request, c: ConsoleContext) -> Callable[[], bool]:
    """For a long-lived stream: are the request's credentials still good (token not revoked, user
    not deleted)? Re-checked now and then by the stream."""
    def check() -> bool:
        try:
            principal(request, c)
        except (HTTPException, Throttled):
            return False
        return True

    return check


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
