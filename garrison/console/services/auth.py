"""Users, roles, passwords (argon2) and bearer tokens (stored as SHA-256, shown once)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from garrison.console.services.errors import Conflict, Invalid, NotFound
from garrison.console.services.throttle import LoginThrottle, Throttled
from garrison.console.store.open import Store

log = logging.getLogger("garrison.console.auth")
Role = Literal["admin", "operator", "auditor"]
ROLES: tuple[Role, ...] = ("admin", "operator", "auditor")
SESSION_TOKEN_TTL_S = 24 * 3600
SESSION_TOKEN_NAME = "session"
"""tokens from POST /authenticate (the web UI's sign-in) carry this name"""
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")

_hasher = PasswordHasher()
# Verifying against this keeps unknown-user logins as slow as wrong-password ones (no user enumeration).
_DUMMY_HASH = _hasher.hash("garrison-dummy-password")


@dataclass(frozen=True)
class Principal:
    username: str
    role: Role

    @property
    def can_write(self) -> bool:
        return self.role in ("admin", "operator")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_password() -> str:
    return secrets.token_urlsafe(18)


BASIC_CACHE_TTL_S = 60.0


class AuthService:
    def __init__(
        self,
        store: Store,
        *,
        throttle: LoginThrottle | None = None,
        on_login_event: Callable[[str], None] | None = None,
    ) -> None:
        """`on_login_event(kind)`: kind is "failed", "throttled" or "lockout" (for /metrics)."""
        self.store = store
        self.throttle = throttle or LoginThrottle(store.throttle)
        self.on_login_event = on_login_event
        # argon2 costs ~50 ms by design; Basic-auth clients send the password on every request, so a
        # verified (username, password) is remembered for a minute under a keyed hash (never the password).
        self._cache_key = secrets.token_bytes(32)
        self._verified: dict[bytes, tuple[float, Principal]] = {}

    def _cache_id(self, username: str, password: str) -> bytes:
        return hmac.new(self._cache_key, f"{username}\0{password}".encode(), hashlib.sha256).digest()

    def forget_cached(self) -> None:
        self._verified.clear()

    def login(self, username: str, password: str, address: str, *, via: str) -> Principal | None:
        """Check a password under the brute-force throttle (raises Throttled); failures are logged,
        counted and recorded in the management audit, and so is a lockout."""
        try:
            on_record = self.throttle.check(username, address)
        except Throttled:
            self._event("throttled")
            raise
        p = self.check_password(username, password)
        if p is not None:
            if on_record:
                self.throttle.succeeded(username, address, on_record)
            return p
        locked = self.throttle.failed(username, address)
        self._event("failed")
        shown = username[:128]
        log.warning("failed login for %r from %s (%s)", shown, address, via)
        self.store.mgmt.record(shown or "-", "auth.login_failed", shown, {"address": address, "via": via})
        for key in locked:
            self._event("lockout")
            log.warning("login locked for %s after repeated failures", key)
            self.store.mgmt.record(
                shown or "-",
                "auth.lockout",
                key,
                {"address": address, "seconds": self.throttle.policy.lockout_s},
            )
        return None

    def _event(self, kind: str) -> None:
        if self.on_login_event is not None:
            self.on_login_event(kind)

    def check_password(self, username: str, password: str) -> Principal | None:
        key = self._cache_id(username, password)
        hit = self._verified.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        p = self._check_password(username, password)
        if p is not None:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[key] = (now + BASIC_CACHE_TTL_S, p)
        return p

    def _check_password(self, username: str, password: str) -> Principal | None:
        user = self.store.users.get(username) if USERNAME_RE.match(username) else None
        try:
            _hasher.verify(user["password_hash"] if user else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        if user is None:
            return None
        return Principal(user["username"], user["role"])

    def check_token(self, token: str) -> Principal | None:
        row = self.store.users.user_for_token(token_hash(token), time.time())
        return Principal(row["username"], row["role"]) if row else None

    def issue_token(
        self, username: str, *, name: str = SESSION_TOKEN_NAME, ttl_s: float | None = SESSION_TOKEN_TTL_S
    ) -> tuple[int, str]:
        token = "gar_" + secrets.token_urlsafe(32)
        expires = time.time() + ttl_s if ttl_s else None
        return self.store.users.add_token(username, token_hash(token), name, expires), token

    # -- user management (admin) -------------------------------------------------------------
    def create_user(self, username: str, password: str, role: Role) -> None:
        if not USERNAME_RE.match(username):
            raise Invalid(
                "username must be 1-128 of letters, digits, '_', '.', '@', '-'", ("body", "username")
            )
        if self.store.users.get(username) is not None:
            raise Conflict(f"user {username!r} already exists")
        self.store.users.create(username, _hasher.hash(password), role)

    def update_user(
        self, username: str, *, password: str | None, role: Role | None, keep_token: str | None = None
    ) -> int:
        """Change password and/or role; returns how many of the user's tokens were revoked.

        A password change revokes every token of the user (sessions and API tokens: whoever knew the
        old password may have minted some); a role change revokes the sessions (the UI signed in under
        the old role; API tokens carry no role of their own and follow the new one at once)."""
        user = self.store.users.get(username)
        if user is None:
            raise NotFound(f"no user {username!r}")
        if role is not None and role != "admin" and user["role"] == "admin":
            self._keep_an_admin(username)
        values: dict[str, str] = {}
        if password is not None:
            values["password_hash"] = _hasher.hash(password)
        if role is not None:
            values["role"] = role
        revoked = 0
        if values:
            self.store.users.update(username, **values)
            self.forget_cached()
            if password is not None:
                keep = token_hash(keep_token) if keep_token else None
                revoked = self.store.users.delete_tokens(username, except_hash=keep)
            elif role is not None and role != user["role"]:
                revoked = self.store.users.delete_tokens(username, name=SESSION_TOKEN_NAME)
        return revoked

    def delete_user(self, username: str) -> None:
        user = self.store.users.get(username)
        if user is None:
            raise NotFound(f"no user {username!r}")
        if user["role"] == "admin":
            self._keep_an_admin(username)
        self.store.users.delete(username)
        self.forget_cached()

    def keep_an_admin(self, username: str) -> None:
        """Conflict if `username` is the last admin."""
        self._keep_an_admin(username)

    def _keep_an_admin(self, username: str) -> None:
        admins = [u for u in self.store.users.all() if u["role"] == "admin" and u["username"] != username]
        if not admins:
            raise Conflict("refusing to remove the last admin")

    def reset_admin(self) -> str:
        """`garrison console reset-admin`: a new random password for `admin` (re-created with the
        admin role if it was deleted or demoted); every token of it is revoked."""
        password = new_password()
        hashed = _hasher.hash(password)
        if self.store.users.get("admin") is None:
            self.store.users.create("admin", hashed, "admin")
        else:
            self.store.users.update("admin", password_hash=hashed, role="admin")
            self.store.users.delete_tokens("admin")
        self.throttle.clear_user("admin")
        self.forget_cached()
        return password

    def ensure_admin(self) -> str | None:
        """First start: create `admin` with a random password and return it (only ever returned once)."""
        if self.store.users.count() > 0:
            return None
        password = new_password()
        try:
            self.store.users.create("admin", _hasher.hash(password), "admin")
        except Exception:
            if self.store.users.count() > 0:  # a replica created it concurrently
                return None
            raise
        return password
