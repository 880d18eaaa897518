"""Every defender-supplied field is bounded (issue 10 #4): oversized heartbeats, hellos, events and
enrolments get a channel error (or the connection is closed) and nothing oversized is stored."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from garrison.channel import protocol as p
from garrison.pki import client_ssl_context
from tests.console.defender_client import bundle_fields, enrol, next_of, open_defender


def wait_for(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 30.0) -> Any:
    """Read until `done` (or the timeout: then the last value, for the assert to show)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _raw(msg: dict[str, object]) -> str:
    return json.dumps({"v": 1, **msg})


def test_oversized_heartbeat_and_event_fields_are_refused(console):
    token = bundle_fields(console.install_bundle())["enrolment_token"]
    app = "bounds-" + uuid.uuid4().hex[:6]

    async def scenario() -> tuple[str, list[p.Error], p.Ack]:
        ident = await enrol(console.ws_address, console.ca_pem, token, requested_id=app)
        conn, _ = await open_defender(console.ws_address, console.ca_pem, ident, app_name=app)
        errors = []
        for stats in (
            {"blob": "x" * (15 * 1024 * 1024)},  # the review's 15 MiB heartbeat
            {f"k{i}": i for i in range(65)},  # too many entries
            {"s": "y" * 600},  # a too long value
            {"nested": {"a": {"b": 1}}},  # only scalars and short lists
        ):
            await conn.send(_raw({"type": "heartbeat", "stats": stats}))
            errors.append(await next_of(conn, p.Error))
        await conn.send(_raw({"type": "heartbeat", "stats": {"spooled": 3, "policy_revision": None}}))
        big = {"id": uuid.uuid4().hex, "type": "process", "effect": "alert", "extra": {"x": "z" * 300_000}}
        small = {"id": uuid.uuid4().hex, "type": "process", "effect": "alert", "message": "ok"}
        await conn.send(_raw({"type": "events", "seq": 1, "events": [big, small]}))
        ack = await next_of(conn, p.Ack)
        await conn.close()
        return ident.defender_id, errors, ack

    defender_id, errors, ack = asyncio.run(scenario())
    assert all(e.code == "malformed" and not e.fatal for e in errors), errors
    assert "limit" in errors[0].message
    assert (ack.stored, ack.rejected) == (1, 1)
    with console.api() as c:
        # heartbeats are written in batches (within a second): wait for this one to land
        d = wait_for(lambda: c.get(f"/defenders/{defender_id}").json(), lambda d: d["stats"] != {})
        assert d["stats"] == {"spooled": 3, "policy_revision": None}
        audits = c.get("/audits/runtime/app-embedded", params={"app": app}).json()
        assert [a["message"] for a in audits] == ["ok"]


def test_oversized_hello_and_enrolment_close_the_connection(console):
    token = bundle_fields(console.install_bundle())["enrolment_token"]

    async def scenario() -> tuple[BaseException | None, BaseException | None, p.Message]:
        ident = await enrol(console.ws_address, console.ca_pem, token, requested_id="big-hello")
        ctx = client_ssl_context(console.ca_pem.encode(), cert_pem=ident.cert_pem, key_pem=ident.key_pem)
        results: list[BaseException | None] = []
        for url_ctx, payload in (
            (ctx, _raw({"type": "hello", "kernel": {"k": "x" * (2 * 1024 * 1024)}})),
            (client_ssl_context(console.ca_pem.encode()), _raw({"type": "enrol", "token": "t" * (1 << 20)})),
        ):
            async with connect(console.ws_address, ssl=url_ctx, max_size=None) as conn:
                await conn.send(payload)
                try:
                    while True:
                        await asyncio.wait_for(conn.recv(), 10)
                except ConnectionClosed as exc:
                    results.append(exc)
        # A hello whose kernel map has too many entries is refused with an error, not stored.
        async with connect(console.ws_address, ssl=ctx) as conn:
            await conn.send(_raw({"type": "hello", "kernel": {f"f{i}": True for i in range(100)}}))
            err = p.parse(await asyncio.wait_for(conn.recv(), 10))
        return results[0], results[1], err

    hello_closed, enrol_closed, err = asyncio.run(scenario())
    for exc in (hello_closed, enrol_closed):
        assert isinstance(exc, ConnectionClosed) and exc.rcvd is not None and exc.rcvd.code == 1009, exc
    assert isinstance(err, p.Error) and err.code == "malformed" and "kernel" in err.message


@pytest.mark.parametrize("field", ["app_name", "org", "hostname"])
def test_hello_string_limits(console, field):
    with pytest.raises(ValueError):
        p.Hello(**{field: "a" * 257})
