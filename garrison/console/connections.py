"""Connection limits of the console process: file descriptors and the HTTPS listener's clients.

File descriptors (issue 10 #5): at start the soft RLIMIT_NOFILE is raised to the hard limit; a
reserve is kept for the store (SQLite files, PostgreSQL pool), logs and the HTTPS port, and new
defender connections are refused with HTTP 503 + Retry-After once the open descriptors reach
`limit - reserve` — instead of the store failing with "unable to open database file".

HTTPS clients (issue 10 #8): the TLS handshake must finish within HANDSHAKE_TIMEOUT_S, each
request's headers within HEADER_TIMEOUT_S of the connection (or of the request's first byte), and
one address may hold at most MAX_PER_ADDRESS connections; idle keep-alive connections are closed
by uvicorn after its keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import collections
import os
import resource
import time
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HANDSHAKE_TIMEOUT_S = 10.0
HEADER_TIMEOUT_S = 10.0
MAX_PER_ADDRESS = 64
MIN_FD_RESERVE = 64
_MAX_SOFT = 1 << 20


def raise_nofile_limit() -> tuple[int, int]:
    """Soft limit → hard limit (capped at 2**20 when unlimited). Returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _MAX_SOFT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, target
    return soft, soft


def fd_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return _MAX_SOFT if soft == resource.RLIM_INFINITY else int(soft)


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - /proc is always there on Linux
        return 0


def fd_reserve(limit: int) -> int:
    """Descriptors kept free for everything but defender connections: 10 %, at least 64."""
    return max(MIN_FD_RESERVE, limit // 10)


class FdCounter:
    """Open descriptors, counted cheaply enough to ask at every new defender connection.

    Listing /proc/self/fd costs O(open descriptors): at 10,000 connections, doing it per handshake
    made a connection storm quadratic. The count is refreshed at most every `refresh_s` and each
    admission since adds one (closes are not subtracted: the estimate only errs high, by the
    connections closed since the last listing); at the threshold the exact count is taken again (at
    most every `near_refresh_s`) before refusing."""

    def __init__(self, refresh_s: float = 1.0, near_refresh_s: float = 0.1) -> None:
        self.refresh_s = refresh_s
        self.near_refresh_s = near_refresh_s
        self.count = 0
        self.admitted = 0
        self.at = -1e9
        self.listings = 0
        """how many times /proc/self/fd was listed (tests check the cost stays sub-linear)"""

    def refresh(self, now: float) -> int:
        self.count, self.admitted, self.at = open_fds(), 0, now
        self.listings += 1
        return self.count

    def estimate(self, threshold: int) -> int:
        now = time.monotonic()
        if now - self.at >= self.refresh_s:
            self.refresh(now)
        est = self.count + self.admitted
        if est >= threshold and now - self.at >= self.near_refresh_s:
            est = self.refresh(now)
        return est


def fd_admission(limit: int | None = None, counter: FdCounter | None = None) -> Callable[[], str | None]:
    """For ChannelServer(admission=...): refuse a new defender when the reserve would be touched."""
    fds = counter or FdCounter()

    def admit() -> str | None:
        lim = fd_limit() if limit is None else limit
        threshold = lim - fd_reserve(lim)
        if fds.estimate(threshold) >= threshold:
            return "fd_limit"
        fds.admitted += 1
        return None

    return admit


class HttpsConnectionStats:
    """Limits and counters shared by every connection of one HTTPS listener.

    `GARRISON_HTTPS_LIMITS="handshake=10,headers=10,per_address=64"` (any subset) changes the limits."""

    def __init__(
        self,
        max_per_address: int = MAX_PER_ADDRESS,
        header_timeout: float = HEADER_TIMEOUT_S,
        handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
    ) -> None:
        self.max_per_address = max_per_address
        self.header_timeout = header_timeout
        self.handshake_timeout = handshake_timeout
        self.per_address: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()


def https_limits_from_env(text: str | None) -> HttpsConnectionStats:
    values: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, _, raw = part.strip().partition("=")
        if key not in ("handshake", "headers", "per_address"):
            raise ValueError(
                f"GARRISON_HTTPS_LIMITS: unknown setting {key!r} (handshake, headers, per_address)"
            )
        try:
            values[key] = float(raw)
        except ValueError:
            raise ValueError(f"GARRISON_HTTPS_LIMITS: {key}={raw!r} is not a number") from None
        if values[key] <= 0:
            raise ValueError(f"GARRISON_HTTPS_LIMITS: {key} must be positive")
    return HttpsConnectionStats(
        max_per_address=int(values.get("per_address", MAX_PER_ADDRESS)),
        header_timeout=values.get("headers", HEADER_TIMEOUT_S),
        handshake_timeout=values.get("handshake", HANDSHAKE_TIMEOUT_S),
    )


def guarded_protocol(stats: HttpsConnectionStats) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a header timeout and a per-address connection cap."""

    class GuardedHttpProtocol(HttpToolsProtocol):
        _address: str | None = None  # set once counted in stats.per_address
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._address = self.client[0] if self.client else ""
            stats.per_address[self._address] += 1
            if stats.per_address[self._address] > stats.max_per_address:
                stats.refused["per_address"] += 1
                transport.abort()
                return
            self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(stats.header_timeout, self._header_timed_out)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timed_out(self) -> None:
            self._header_timer = None
            stats.refused["header_timeout"] += 1
            self.transport.abort()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:
                self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            if self._address is not None:
                stats.per_address[self._address] -= 1
                if stats.per_address[self._address] <= 0:
                    del stats.per_address[self._address]
                self._address = None
            super().connection_lost(exc)

    return GuardedHttpProtocol


def with_handshake_timeout(loop: asyncio.AbstractEventLoop, seconds: float) -> Callable[[], None]:
    """Make the loop's create_server default to `ssl_handshake_timeout=seconds` (uvicorn passes none,
    so asyncio's 60 s applied). Returns the undo function."""
    original = loop.create_server

    def create_server(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", seconds)
        return original(*args, **kwargs)

    loop.create_server = create_server  # type: ignore[method-assign]

    def undo() -> None:
        loop.__dict__.pop("create_server", None)

    return undo
