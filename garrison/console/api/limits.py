"""ASGI guards that run before any handler: body size limit (413) and NUL characters.

PostgreSQL text cannot hold NUL. A NUL byte in the URL or a raw one in a body is refused (400); an
escaped `\u0000` inside a JSON string is valid JSON and valid for the schema, so it is accepted and
stored as U+FFFD (the replacement character) — the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 2 * 1024 * 1024
# Scan reports list every package and finding of a droplet: they get a larger allowance.
LARGE_BODY_PATHS = {"/api/v1/scans": 32 * 1024 * 1024}


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# An escaped NUL: `\u0000` preceded by an even number of backslashes (`\\u0000` is a backslash + text).
_ESCAPED_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def replace_escaped_nul(body: bytes) -> bytes:
    return _ESCAPED_NUL.sub(rb"\1\\ufffd", body) if b"\\u0000" in body else body


class _TooLarge(Exception):
    pass


class RequestGuard:
    def __init__(
        self, app: ASGIApp, max_body: int = MAX_BODY_BYTES, large: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.large = LARGE_BODY_PATHS if large is None else large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        if b"%00" in raw_path or b"%00" in scope.get("query_string", b"") or "\x00" in scope["path"]:
            await _reply(send, 400, "NUL characters are not allowed in the URL")
            return
        limit = self.large.get(scope["path"].rstrip("/"), self.max_body)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                await _reply(send, 400, "invalid Content-Length")
                return
            if too_big:
                await _reply(send, 413, f"request body larger than {limit} bytes")
                return
        # Buffer the (bounded) body so chunked uploads are limited too and NULs can be checked.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _reply(send, 413, f"request body larger than {limit} bytes")
                return
            chunks.append(chunk)
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        if b"\x00" in body:
            await _reply(send, 400, "NUL characters are not allowed in the request body")
            return
        if _is_json(headers.get(b"content-type", b"")):
            body = replace_escaped_nul(body)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


def status_counter(app: ASGIApp, inc: Any) -> ASGIApp:
    """Count responses per status class for /metrics."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def counting_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                inc(f"{msg['status'] // 100}xx")
            await send(msg)

        await app(scope, receive, counting_send)

    return wrapped


HSTS = b"max-age=31536000"
"""one year; the console serves HTTPS only, on every port it has"""


def security_headers(app: ASGIApp) -> ASGIApp:
    """HSTS and nosniff on every response (API, UI, docs, errors from the guards, 404s)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers") or [])
                names = {k.lower() for k, _ in headers}
                if b"strict-transport-security" not in names:
                    headers.append((b"strict-transport-security", HSTS))
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                msg = {**msg, "headers": headers}
            await send(msg)

        await app(scope, receive, send_with_headers)

    return wrapped
