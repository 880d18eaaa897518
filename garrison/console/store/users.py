"""Users and API tokens (only hashes are stored)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from garrison.console.store.cluster import bump
from garrison.console.store.tables import api_tokens, users


class UserStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def count(self) -> int:
        with self.engine.connect() as c:
            return len(c.execute(select(users.c.id)).all())

    def get(self, username: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(users).where(users.c.username == username)).mappings().first()
            return dict(row) if row else None

    def all(self) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = c.execute(select(users.c.username, users.c.role, users.c.created_at).order_by(users.c.id))
            return [dict(r) for r in rows.mappings()]

    def create(self, username: str, password_hash: str, role: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                insert(users).values(
                    username=username, password_hash=password_hash, role=role, created_at=time.time()
                )
            )

    def update(self, username: str, **values: Any) -> bool:
        with self.engine.begin() as c:
            bump(c, "auth")  # other replicas forget the passwords they verified
            return c.execute(update(users).where(users.c.username == username).values(**values)).rowcount > 0

    def delete(self, username: str) -> bool:
        with self.engine.begin() as c:
            row = c.execute(select(users.c.id).where(users.c.username == username)).first()
            if row is None:
                return False
            c.execute(delete(api_tokens).where(api_tokens.c.user_id == row.id))
            c.execute(delete(users).where(users.c.id == row.id))
            bump(c, "auth")
            return True

    def add_token(self, username: str, token_hash: str, name: str, expires_at: float | None) -> int:
        with self.engine.begin() as c:
            uid = c.execute(select(users.c.id).where(users.c.username == username)).scalar_one()
            res = c.execute(
                insert(api_tokens).values(
                    token_hash=token_hash,
                    user_id=uid,
                    name=name,
                    created_at=time.time(),
                    expires_at=expires_at,
                )
            )
            return int(res.inserted_primary_key[0])  # type: ignore[index]

    def user_for_token(self, token_hash: str, now: float) -> dict[str, Any] | None:
        q = (
            select(users.c.username, users.c.role, api_tokens.c.expires_at)
            .join(api_tokens, api_tokens.c.user_id == users.c.id)
            .where(api_tokens.c.token_hash == token_hash)
        )
        with self.engine.connect() as c:
            row = c.execute(q).mappings().first()
        if row is None or (row["expires_at"] is not None and row["expires_at"] < now):
            return None
        return {"username": row["username"], "role": row["role"]}

    def list_tokens(self, username: str) -> list[dict[str, Any]]:
        q = (
            select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.created_at, api_tokens.c.expires_at)
            .join(users, api_tokens.c.user_id == users.c.id)
            .where(users.c.username == username)
            .order_by(api_tokens.c.id)
        )
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def token_id_for(self, token_hash: str) -> int | None:
        with self.engine.connect() as c:
            return c.execute(select(api_tokens.c.id).where(api_tokens.c.token_hash == token_hash)).scalar()

    def delete_token(self, username: str, token_id: int) -> bool:
        with self.engine.begin() as c:
            uid = c.execute(select(users.c.id).where(users.c.username == username)).scalar_one_or_none()
            if uid is None:
                return False
            res = c.execute(
                delete(api_tokens).where(api_tokens.c.id == token_id, api_tokens.c.user_id == uid)
            )
            return res.rowcount > 0

    def delete_tokens(self, username: str, *, name: str | None = None, except_hash: str | None = None) -> int:
        """Revoke the user's tokens (only those called `name` when given; never `except_hash`)."""
        with self.engine.begin() as c:
            uid = c.execute(select(users.c.id).where(users.c.username == username)).scalar_one_or_none()
            if uid is None:
                return 0
            q = delete(api_tokens).where(api_tokens.c.user_id == uid)
            if name is not None:
                q = q.where(api_tokens.c.name == name)
            if except_hash is not None:
                q = q.where(api_tokens.c.token_hash != except_hash)
            return int(c.execute(q).rowcount)

    def purge_expired_tokens(self, now: float) -> None:
        with self.engine.begin() as c:
            c.execute(delete(api_tokens).where(api_tokens.c.expires_at < now))
