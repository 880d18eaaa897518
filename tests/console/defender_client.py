"""A minimal raw defender for the console tests: enrol, hello, events, heartbeat over the real channel."""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from garrison.channel import protocol as p
from garrison.pki import client_ssl_context, make_key_and_csr


@dataclass
class Identity:
    defender_id: str
    cert_pem: bytes
    key_pem: bytes


def bundle_fields(bundle: str) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(bundle)))


async def enrol_raw(ws: str, ca_pem: str, msg: p.Enrol) -> p.Message:
    async with connect(ws, ssl=client_ssl_context(ca_pem.encode())) as conn:
        await conn.send(p.dump(msg))
        return p.parse(await conn.recv())


def enrol_msg(
    token: str, *, nonce: str | None = None, ts: float | None = None, requested_id: str = ""
) -> p.Enrol:
    _key, csr = make_key_and_csr("ignored")
    return p.Enrol(
        token=token,
        nonce=nonce or secrets.token_urlsafe(24),
        timestamp=time.time() if ts is None else ts,
        csr_pem=csr.decode(),
        requested_id=requested_id,
    )


async def enrol(ws: str, ca_pem: str, token: str, requested_id: str = "") -> Identity:
    key, csr = make_key_and_csr("ignored")
    msg = p.Enrol(
        token=token, nonce=secrets.token_urlsafe(24), timestamp=time.time(), csr_pem=csr.decode(),
        requested_id=requested_id,
    )  # fmt: skip
    reply = await enrol_raw(ws, ca_pem, msg)
    assert isinstance(reply, p.Enrolled), reply
    return Identity(reply.defender_id, reply.cert_pem.encode(), key)


async def open_defender(
    ws: str, ca_pem: str, ident: Identity, **hello: Any
) -> tuple[ClientConnection, p.PolicySnapshot]:
    ctx = client_ssl_context(ca_pem.encode(), cert_pem=ident.cert_pem, key_pem=ident.key_pem)
    conn = await connect(ws, ssl=ctx)
    await conn.send(p.dump(p.Hello(**hello)))
    snap = p.parse(await conn.recv())
    assert isinstance(snap, p.PolicySnapshot), snap
    return conn, snap


async def next_of(conn: ClientConnection, kind: type[p._Msg]) -> Any:
    while True:
        msg = p.parse(await conn.recv())
        if isinstance(msg, kind):
            return msg


async def deliver(ws: str, ca_pem: str, token: str, app: str, events: list[dict[str, Any]]) -> int:
    """Enrol a defender for `app`, send `events` in one batch and return how many were stored."""
    ident = await enrol(ws, ca_pem, token)
    conn, _ = await open_defender(ws, ca_pem, ident, app_name=app)
    try:
        await conn.send(p.dump(p.Events(seq=1, events=events)))
        ack = await next_of(conn, p.Ack)
        return int(ack.stored)
    finally:
        await conn.close()
