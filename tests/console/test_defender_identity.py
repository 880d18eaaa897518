"""Defender identity cannot be taken over (issue 10 #1, #2; issue 18 #7), on SQLite and PostgreSQL.

An id is bound to the key it was issued for; a scoped bundle enrols only its own app; two apps with
the same name in different spaces get different ids and both stay connected; events are stamped
with the identity bound at enrolment; an event id sent first by another defender does not make a
genuine event a "duplicate".
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect

from garrison.channel import protocol as p
from garrison.pki import client_ssl_context
from tests.console.defender_client import Identity, bundle_fields, enrol_raw, next_of, open_defender


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _csr(key: ec.EllipticCurvePrivateKey) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whatever-i-like")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


async def _enrol(
    console: Any,
    token: str,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    requested_id: str = "",
    app: p.AppIdentity | None = None,
) -> p.Message:
    key = key or _key()
    msg = p.Enrol(
        token=token,
        nonce=secrets.token_urlsafe(24),
        timestamp=time.time(),
        csr_pem=_csr(key),
        requested_id=requested_id,
        app=app,
    )
    return await enrol_raw(console.ws_address, console.ca_pem, msg)


async def _identity(console: Any, token: str, **kw: Any) -> Identity:
    key = kw.pop("key", None) or _key()
    reply = await _enrol(console, token, key=key, **kw)
    assert isinstance(reply, p.Enrolled), reply
    return Identity(reply.defender_id, reply.cert_pem.encode(), _pem(key))


def _ev(app: str, event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or uuid.uuid4().hex, "type": "process", "effect": "alert", "app_name": app,
            "org": "forged-org", "space": "forged-space", "message": "x"}  # fmt: skip


def test_live_id_never_reissued_to_another_key(any_console):
    app = "victim-" + uuid.uuid4().hex[:6]
    token = bundle_fields(any_console.install_bundle())["enrolment_token"]
    victim_key = _key()

    async def scenario() -> None:
        victim = await _identity(any_console, token, key=victim_key, requested_id=f"{app}-0")
        conn, _ = await open_defender(any_console.ws_address, any_console.ca_pem, victim, app_name=app)
        # The attacker asks for the victim's exact id with its own key: it gets another id.
        for requested in (f"{app}-0", victim.defender_id):
            attacker = await _identity(any_console, token, requested_id=requested)
            assert attacker.defender_id != victim.defender_id
            aconn, _ = await open_defender(any_console.ws_address, any_console.ca_pem, attacker, app_name=app)
            # The victim is not kicked off ("replaced") and stays reachable.
            with_ping = await conn.ping()
            await asyncio.wait_for(with_ping, 10)
            await aconn.close()
        # The instance that kept its key (a restart with its cached key) gets its own id back.
        again = await _identity(any_console, token, key=victim_key, requested_id=f"{app}-0")
        assert again.defender_id == victim.defender_id
        await conn.close()

    asyncio.run(scenario())


def test_scoped_bundle_cannot_claim_another_app(any_console):
    app = "scoped-" + uuid.uuid4().hex[:6]
    with any_console.api() as c:
        r = c.get("/defenders/install-bundle", params={"org": "acme", "space": "prod", "app": app})
        assert r.status_code == 200
    token = bundle_fields(r.json()["bundle"])["enrolment_token"]
    mine = p.AppIdentity(app_name=app, org="acme", space="prod", app_guid="g-1", instance=2)

    async def scenario() -> list[p.Message]:
        return [
            await _enrol(any_console, token, app=mine.model_copy(update={"app_name": "payments"})),
            await _enrol(any_console, token, app=mine.model_copy(update={"space": "dev"})),
            await _enrol(any_console, token, app=None),
            await _enrol(any_console, token, requested_id="payments-0", app=mine),
        ]

    other_app, other_space, no_claim, ok = asyncio.run(scenario())
    for refused in (other_app, other_space, no_claim):
        assert isinstance(refused, p.Error) and refused.code == "enrolment_refused", refused
        assert "scoped to another app" in refused.message
    assert isinstance(ok, p.Enrolled)
    # The readable part is what was asked for; the identity is the one checked against the scope.
    with any_console.api() as c:
        d = c.get(f"/defenders/{ok.defender_id}").json()
    assert (d["app_name"], d["org"], d["space"], d["app_guid"], d["instance"]) == (
        app,
        "acme",
        "prod",
        "g-1",
        2,
    )
    assert "key_fingerprint" not in d


def test_same_app_name_in_two_spaces(any_console):
    """Issue 18 #7: `shop-web` in two spaces — two defenders, both connected, each its own audits."""
    app = "shop-" + uuid.uuid4().hex[:6]
    token = bundle_fields(any_console.install_bundle())["enrolment_token"]

    async def scenario() -> tuple[list[Identity], list[int]]:
        idents, conns = [], []
        for space in ("dev", "prod"):
            ident_app = p.AppIdentity(app_name=app, org="acme", space=space, app_guid=f"guid-{space}")
            ident = await _identity(any_console, token, requested_id=f"{app}-0", app=ident_app)
            conn, _ = await open_defender(
                any_console.ws_address, any_console.ca_pem, ident, app_name=app, space="hello-lies"
            )
            idents.append(ident)
            conns.append(conn)
        stored = []
        for conn in conns:
            await conn.send(p.dump(p.Events(seq=1, events=[_ev(app) for _ in range(3)])))
            stored.append((await next_of(conn, p.Ack)).stored)

        # Forensics reach the right instance.
        async def answer(conn: Any, tag: str) -> None:
            cmd = await next_of(conn, p.Command)
            await conn.send(p.dump(p.CommandResult(id=cmd.id, ok=True, data={"from": tag})))

        responder = asyncio.create_task(answer(conns[1], "prod"))
        with any_console.api() as c:
            r = await asyncio.to_thread(c.get, f"/defenders/{idents[1].defender_id}/forensics")
        await responder
        assert r.json() == {"from": "prod"}
        for conn in conns:
            await conn.close()
        return idents, stored

    idents, stored = asyncio.run(scenario())
    assert idents[0].defender_id != idents[1].defender_id
    assert stored == [3, 3]
    with any_console.api() as c:
        listed = c.get("/defenders", params={"app": app}).json()
        assert sorted(d["space"] for d in listed) == ["dev", "prod"]
        audits = c.get("/audits/runtime/app-embedded", params={"app": app}).json()
    # Stamped with the identity bound at enrolment, not what the events or the hello claimed.
    by_defender = {a["defender_id"]: a["space"] for a in audits}
    assert by_defender == {idents[0].defender_id: "dev", idents[1].defender_id: "prod"}
    assert {a["org"] for a in audits} == {"acme"}


def test_event_id_squatting(any_console):
    """Issue 10 #2: another defender sending an event id first does not drop the genuine event."""
    app = "squat-" + uuid.uuid4().hex[:6]
    token = bundle_fields(any_console.install_bundle())["enrolment_token"]
    shared_id = uuid.uuid4().hex

    async def scenario() -> list[int]:
        acks = []
        for who in ("squatter", "genuine"):
            ident = await _identity(
                any_console, token, requested_id=who, app=p.AppIdentity(app_name=app, space=who)
            )
            conn, _ = await open_defender(any_console.ws_address, any_console.ca_pem, ident)
            for seq in (1, 2):  # the re-send of each is still a duplicate of its own
                await conn.send(p.dump(p.Events(seq=seq, events=[_ev(app, shared_id)])))
                acks.append((await next_of(conn, p.Ack)).stored)
            await conn.close()
        return acks

    assert asyncio.run(scenario()) == [1, 0, 1, 0]
    with any_console.api() as c:
        audits = c.get("/audits/runtime/app-embedded", params={"app": app}).json()
    assert sorted(a["space"] for a in audits) == ["genuine", "squatter"]


def test_revoked_key_cannot_re_enrol(any_console):
    token = bundle_fields(any_console.install_bundle())["enrolment_token"]
    key = _key()
    ident = asyncio.run(_identity(any_console, token, key=key, requested_id="gone"))
    with any_console.api() as c:
        assert c.delete(f"/defenders/{ident.defender_id}").status_code == 204
    again = asyncio.run(_enrol(any_console, token, key=key, requested_id="gone"))
    assert isinstance(again, p.Error) and "removed" in again.message


def test_hello_cannot_change_bound_identity(any_console):
    token = bundle_fields(any_console.install_bundle())["enrolment_token"]
    app = "bound-" + uuid.uuid4().hex[:6]
    claim = p.AppIdentity(app_name=app, org="o1", space="s1", app_guid="g1", instance=1)

    async def scenario() -> str:
        ident = await _identity(any_console, token, app=claim)
        ctx = client_ssl_context(any_console.ca_pem.encode(), cert_pem=ident.cert_pem, key_pem=ident.key_pem)
        async with connect(any_console.ws_address, ssl=ctx) as conn:
            await conn.send(
                p.dump(p.Hello(app_name="payments", org="bank", space="prod", instance=7, version="9"))
            )
            assert isinstance(p.parse(await conn.recv()), p.PolicySnapshot)
        return ident.defender_id

    defender_id = asyncio.run(scenario())
    with any_console.api() as c:
        d = c.get(f"/defenders/{defender_id}").json()
    assert (d["app_name"], d["org"], d["space"], d["instance"], d["version"]) == (app, "o1", "s1", 1, "9")
