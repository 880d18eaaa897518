"""POST /authenticate (Prisma-compatible), users CRUD and API tokens."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from garrison.console.api.deps import Admin, Ctx, Reader, login_address
from garrison.console.services.auth import Role, token_hash


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    token: str


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(min_length=8, max_length=1024)
    role: Role


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    role: Role | None = None


class UserOut(BaseModel):
    username: str
    role: Role
    created_at: float


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    ttl_days: int | None = Field(default=90, ge=1, le=3650, description="null = never expires")


class ApiTokenOut(BaseModel):
    id: int
    name: str
    token: str


router = APIRouter(tags=["auth"])


@router.post("/authenticate", response_model=TokenOut)
async def authenticate(body: Credentials, c: Ctx, request: Request) -> Any:
    address = login_address(request, c)
    p = await run_in_threadpool(c.auth.login, body.username, body.password, address, via="authenticate")
    if p is None:
        raise HTTPException(status_code=401, detail="wrong username or password")
    _, token = await run_in_threadpool(c.auth.issue_token, p.username)
    return {"token": token}


@router.get("/users", response_model=list[UserOut])
def list_users(c: Ctx, _p: Admin) -> Any:
    return c.store.users.all()


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(body: NewUser, c: Ctx, p: Admin) -> Any:
    c.auth.create_user(body.username, body.password, body.role)
    c.store.mgmt.record(p.username, "user.create", body.username, {"role": body.role})
    return next(u for u in c.store.users.all() if u["username"] == body.username)


@router.put("/users/{username}", response_model=UserOut)
def update_user(username: str, body: UserUpdate, c: Ctx, p: Admin, request: Request) -> Any:
    """A password change revokes the user's tokens (when changing your own password, all but the one
    of this request); a role change revokes their sessions. Your own role cannot be changed here."""
    if username == p.username and body.role is not None and body.role != p.role:
        c.auth.keep_an_admin(username)  # the older, more telling refusal when it applies
        raise HTTPException(status_code=409, detail="you cannot change your own role: ask another admin")
    revoked = c.auth.update_user(
        username, password=body.password, role=body.role, keep_token=_own_token(request, username, p.username)
    )
    detail: dict[str, Any] = {"role": body.role} if body.role else {}
    if body.password is not None:
        detail["password"] = "changed"
    if revoked:
        detail["tokens_revoked"] = revoked
    c.store.mgmt.record(p.username, "user.update", username, detail)
    return next(u for u in c.store.users.all() if u["username"] == username)


def _own_token(request: Request, username: str, caller: str) -> str | None:
    if username != caller:
        return None
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


@router.delete("/users/{username}", status_code=204)
def delete_user(username: str, c: Ctx, p: Admin) -> None:
    if username == p.username:
        c.auth.keep_an_admin(username)  # the older, more telling refusal when it applies
        raise HTTPException(status_code=409, detail="you cannot delete your own account: ask another admin")
    c.auth.delete_user(username)
    c.store.mgmt.record(p.username, "user.delete", username)


@router.post("/tokens", response_model=ApiTokenOut, status_code=201)
def create_token(body: NewToken, c: Ctx, p: Reader) -> Any:
    """A long-lived API token for the calling user (shown once; only its hash is stored)."""
    ttl = body.ttl_days * 86400.0 if body.ttl_days else None
    token_id, token = c.auth.issue_token(p.username, name=body.name, ttl_s=ttl)
    c.store.mgmt.record(p.username, "token.create", body.name)
    return {"id": token_id, "name": body.name, "token": token}


@router.get("/tokens")
def list_tokens(c: Ctx, p: Reader) -> list[dict[str, Any]]:
    return c.store.users.list_tokens(p.username)


@router.delete("/tokens/{token_id}", status_code=204)
def delete_token(
    token_id: Annotated[int, Path(ge=1, le=2**31 - 1)], c: Ctx, p: Reader, request: Request
) -> None:
    """Revoke one of your tokens — not the one authenticating this request (409): automation cannot
    lock itself out by accident; sign out by forgetting the token, or revoke it with another one."""
    own = _own_token(request, p.username, p.username)
    if own is not None and c.store.users.token_id_for(token_hash(own)) == token_id:
        raise HTTPException(
            status_code=409, detail="this token authenticates this request: revoke it with another"
        )
    if not c.store.users.delete_token(p.username, token_id):
        raise HTTPException(status_code=404, detail=f"no token {token_id}")
    c.store.mgmt.record(p.username, "token.delete", str(token_id))


@router.get("/audits/mgmt")
def mgmt_audits(
    c: Ctx,
    _p: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    username: Annotated[str | None, Query(max_length=128)] = None,
) -> list[dict[str, Any]]:
    """The admin audit trail: user, policy, defender, token and settings changes, newest first."""
    return c.store.mgmt.list(limit=limit, offset=offset, username=username)
