"""The console's channel backend through the real WSS channel: enrolment, push, events, revocation."""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from garrison.channel import protocol as p
from garrison.pki import CertificateAuthority, ensure_ca
from tests.console.defender_client import (
    Identity,
    bundle_fields,
    enrol,
    enrol_msg,
    enrol_raw,
    next_of,
    open_defender,
)


def _event(app: str, **kw: object) -> dict[str, object]:
    return {"id": uuid.uuid4().hex, "type": "process", "effect": "prevent", "severity": "high",
            "app_name": app, "rule": "r1", "message": "denied /bin/nc", **kw}  # fmt: skip


def test_enrol_connect_push_events(any_console):
    app = "chan-" + uuid.uuid4().hex[:6]
    token = bundle_fields(any_console.install_bundle())["enrolment_token"]

    async def scenario() -> tuple[str, int, list[int]]:
        ident = await enrol(any_console.ws_address, any_console.ca_pem, token, requested_id=f"{app}-0")
        conn, snap = await open_defender(
            any_console.ws_address, any_console.ca_pem, ident, app_name=app, org="o", space="s",
            kernel={"seccomp_notify": True}, version="0.1.0",
        )  # fmt: skip
        # A policy change is pushed.
        put = await asyncio.to_thread(any_console.put_policy, {"rules": [{"name": f"{app}-rule"}]})
        pushed = await next_of(conn, p.PolicySnapshot)
        assert pushed.revision == put["revision"] > snap.revision
        assert pushed.policy.rules[0].name == f"{app}-rule"
        # Events are stored once, acknowledged twice (at-least-once re-send).
        events = [_event(app) for _ in range(25)]
        stored = []
        for seq in (1, 2):
            await conn.send(p.dump(p.Events(seq=seq, events=events)))
            ack = await next_of(conn, p.Ack)
            assert ack.seq == seq
            stored.append(ack.stored)
        await conn.send(p.dump(p.Heartbeat(stats={"uptime": 5})))
        await conn.close()
        return ident.defender_id, snap.revision, stored

    defender_id, _rev, stored = asyncio.run(scenario())
    assert defender_id.startswith(f"{app}-0-")  # + the key's fingerprint: ids are bound to keys
    assert stored == [25, 0]
    with any_console.api() as c:
        r = c.get("/audits/runtime/app-embedded", params={"app": app})
        assert r.status_code == 200 and len(r.json()) == 25 and r.headers["Total-Count"] == "25"
        assert {e["defender_id"] for e in r.json()} == {defender_id}
        d = c.get(f"/defenders/{defender_id}").json()
        assert d["app_name"] == app and d["kernel"] == {"seccomp_notify": True}
        deadline = time.monotonic() + 10
        while c.get(f"/defenders/{defender_id}").json()["connected"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not c.get(f"/defenders/{defender_id}").json()["connected"]
        assert c.get("/defenders/summary").json()["total"] >= 1
        inc = c.get("/incidents", params={"app": app}).json()
        assert len(inc) == 1 and inc[0]["count"] == 25 and inc[0]["type"] == "process"


def test_enrolment_refusals(any_console):
    token = bundle_fields(any_console.install_bundle())["enrolment_token"]

    async def scenario() -> list[p.Message]:
        msg = enrol_msg(token)
        first = await enrol_raw(any_console.ws_address, any_console.ca_pem, msg)
        replay = await enrol_raw(any_console.ws_address, any_console.ca_pem, msg)
        bad_token = await enrol_raw(
            any_console.ws_address, any_console.ca_pem, enrol_msg("enr_not-a-real-token")
        )
        stale = await enrol_raw(
            any_console.ws_address, any_console.ca_pem, enrol_msg(token, ts=time.time() - 3600)
        )
        return [first, replay, bad_token, stale]

    first, replay, bad_token, stale = asyncio.run(scenario())
    assert isinstance(first, p.Enrolled)
    # Revoking the enrolment tokens invalidates every bundle issued so far, not the enrolled defenders.
    with any_console.api() as c:
        r = c.delete("/enrolment-tokens")
        assert r.status_code == 200 and r.json()["revoked"] >= 1
    revoked = asyncio.run(enrol_raw(any_console.ws_address, any_console.ca_pem, enrol_msg(token)))
    assert isinstance(revoked, p.Error) and "unknown or revoked" in revoked.message
    assert isinstance(first, p.Enrolled)
    for msg, words in ((replay, "already used"), (bad_token, "unknown or revoked"), (stale, "clock")):
        assert isinstance(msg, p.Error) and msg.code == "enrolment_refused", msg
        assert words in msg.message


def test_revoked_defender_is_refused(any_console):
    token = bundle_fields(any_console.install_bundle())["enrolment_token"]
    app = "rev-" + uuid.uuid4().hex[:6]

    async def connect_and_wait_delete() -> Identity:
        ident = await enrol(any_console.ws_address, any_console.ca_pem, token, requested_id=app)
        conn, _ = await open_defender(any_console.ws_address, any_console.ca_pem, ident, app_name=app)
        with any_console.api() as c:
            assert (await asyncio.to_thread(c.delete, f"/defenders/{ident.defender_id}")).status_code == 204
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(conn.recv(), 10)
        return ident

    ident = asyncio.run(connect_and_wait_delete())

    async def reconnect() -> str:
        from websockets.asyncio.client import connect

        from garrison.pki import client_ssl_context

        ctx = client_ssl_context(any_console.ca_pem.encode(), cert_pem=ident.cert_pem, key_pem=ident.key_pem)
        try:
            async with connect(any_console.ws_address, ssl=ctx) as conn:
                msg = p.parse(await asyncio.wait_for(conn.recv(), 10))  # refused before any hello
                assert isinstance(msg, p.Error) and msg.fatal
                return msg.code
        except ConnectionClosed as exc:
            return "revoked" if exc.rcvd and "removed" in exc.rcvd.reason else repr(exc)

    assert asyncio.run(reconnect()) == "revoked"
    with any_console.api() as c:
        assert c.get("/defenders", params={"app": app}).json() == []
        listed = c.get("/defenders", params={"app": app, "include_revoked": True}).json()
        assert [d["revoked"] for d in listed] == [True]
        assert c.delete(f"/defenders/{ident.defender_id}").status_code == 404
        # Re-enrolling with the revoked id yields a new identity; the old certificate stays refused.
        new = asyncio.run(enrol(any_console.ws_address, any_console.ca_pem, token, requested_id=app))
        assert new.defender_id != ident.defender_id and new.defender_id.startswith(app)


def test_foreign_certificate_is_rejected(any_console, tmp_path):
    other: CertificateAuthority = ensure_ca(tmp_path / "other-ca")
    from garrison.pki import client_ssl_context, make_key_and_csr

    key, csr = make_key_and_csr("x")
    cert = other.sign_defender_csr(csr, "intruder")

    async def attempt() -> None:
        from websockets.asyncio.client import connect

        ctx = client_ssl_context(any_console.ca_pem.encode(), cert_pem=cert, key_pem=key)
        async with connect(any_console.ws_address, ssl=ctx) as conn:
            await conn.send(p.dump(p.Hello()))
            await asyncio.wait_for(conn.recv(), 10)

    with pytest.raises((ssl.SSLError, ConnectionClosed, InvalidHandshake, OSError)):
        asyncio.run(attempt())


def test_forensics_command_round_trip(any_console):
    token = bundle_fields(any_console.install_bundle())["enrolment_token"]
    app = "for-" + uuid.uuid4().hex[:6]

    async def scenario() -> tuple[int, object, int]:
        ident = await enrol(any_console.ws_address, any_console.ca_pem, token, requested_id=app)
        conn, _ = await open_defender(any_console.ws_address, any_console.ca_pem, ident, app_name=app)

        async def answer() -> None:
            cmd = await next_of(conn, p.Command)
            assert cmd.name == "upload_forensics" and cmd.args["max_bytes"] == 2048
            await conn.send(p.dump(p.CommandResult(id=cmd.id, ok=True, data={"records": ["exec /bin/ls"]})))

        responder = asyncio.create_task(answer())
        with any_console.api() as c:
            r = await asyncio.to_thread(
                c.get, f"/defenders/{ident.defender_id}/forensics", params={"max_bytes": 2048}
            )
        await responder
        await conn.close()
        with any_console.api() as c:
            gone = await asyncio.to_thread(c.get, "/defenders/nobody-here/forensics")
        return r.status_code, r.json(), gone.status_code

    status, body, gone = asyncio.run(scenario())
    assert status == 200 and body == {"records": ["exec /bin/ls"]}
    assert gone == 404
