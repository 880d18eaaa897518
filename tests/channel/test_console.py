"""The channel against the real console (subprocess, SQLite and PostgreSQL) through its REST API."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from garrison.channel import protocol as p
from garrison.channel.bundle import InstallBundle, decode_bundle
from garrison.channel.client import DefenderChannelClient
from garrison.pki.ca import client_ssl_context, make_key_and_csr
from garrison.policy.audit import AuditEvent
from tests.fixtures.console import RunningConsole
from tests.polling import until as _until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _client(bundle: InstallBundle, folder: Path, app: str) -> DefenderChannelClient:
    hello = p.Hello(defender_id=f"{app}-0", app_id=app, app_name=app, org="org1", space="dev", version="t")
    return DefenderChannelClient(bundle, folder, hello, backoff_base=0.1, backoff_max=1.0)


def _events(app: str, ids: range) -> list[AuditEvent]:
    return [
        AuditEvent(id=f"{app}-{i:06d}", type="process", effect="alert", exe="/bin/sh", argv=["sh"], pid=i)
        for i in ids
    ]


def _audit_count(api: httpx.Client, app: str) -> int:
    r = api.get("/audits/runtime/app-embedded", params={"app": app, "limit": 1})
    r.raise_for_status()
    return int(r.headers["Total-Count"])


def _defender(api: httpx.Client, defender_id: str) -> dict[str, Any]:
    r = api.get(f"/defenders/{defender_id}")
    r.raise_for_status()
    return dict(r.json())


@pytest.mark.parametrize("which", ["console", "console_pg"])
def test_enrol_policy_push_events_disconnect(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    console: RunningConsole = request.getfixturevalue(which)
    app = "chan-" + uuid.uuid4().hex[:8]
    c = _client(decode_bundle(console.install_bundle()), tmp_path, app)
    c.start()
    try:
        assert c.wait_policy(30), c.last_error
        assert c.policy is not None and c.policy.revision == console.policy()["revision"]
        with console.api() as api:
            d = _defender(api, c.defender_id)
            assert d["connected"] and d["app_name"] == app and d["space"] == "dev"
            # PUT of the policy is pushed to the connected defender
            body = console.policy()
            body["rules"] = [*body.get("rules", []), {"name": f"rule-{app}", "scope": {"apps": [app]}}]
            body.pop("revision", None)
            new_rev = console.put_policy(body)["revision"]
            _until(lambda: c.policy is not None and c.policy.revision == new_rev, 10, "policy push")
            assert any(r.name == f"rule-{app}" for r in c.policy.rules)
            # events acked and stored exactly once, even when sent twice
            c.submit_many(_events(app, range(30)))
            assert c.wait_delivered(30)
            c.submit_many(_events(app, range(20, 40)))
            assert c.wait_delivered(30)
            assert _audit_count(api, app) == 40
            stored = api.get("/audits/runtime/app-embedded", params={"app": app, "limit": 1}).json()[0]
            assert stored["defender_id"] == c.defender_id and stored["org"] == "org1"
            did = c.defender_id
            c.stop()
            _until(lambda: not _defender(api, did)["connected"], 15, "disconnect marking")
    finally:
        c.stop()


def test_deleted_defender_is_refused(console: RunningConsole, tmp_path: Path) -> None:
    app = "chan-del-" + uuid.uuid4().hex[:8]
    c = _client(decode_bundle(console.install_bundle()), tmp_path, app)
    c.start()
    try:
        assert c.wait_connected(30), c.last_error
        connects = c.stats["connects"]
        with console.api() as api:
            api.delete(f"/defenders/{c.defender_id}").raise_for_status()
            _until(lambda: c.revoked and not c.connected, 15, "revocation")
            time.sleep(2.0)  # it keeps retrying, and is refused at every connect
            assert c.stats["connects"] == connects and not c.connected
            assert c.defender_id not in {d["id"] for d in api.get("/defenders").json()}
    finally:
        c.stop()


def _raw_enrol(bundle: InstallBundle, msg: p.Enrol) -> p.Message:
    with connect(bundle.ws_address, ssl=client_ssl_context(bundle.ca_pem.encode()), proxy=None) as ws:
        ws.send(p.dump(msg))
        return p.parse(ws.recv(60))


def test_replayed_stale_and_bad_token_enrolments_refused(console: RunningConsole) -> None:
    bundle = decode_bundle(console.install_bundle())
    _, csr = make_key_and_csr("x")
    enrol = p.Enrol(
        token=bundle.enrolment_token, nonce=uuid.uuid4().hex, timestamp=time.time(), csr_pem=csr.decode()
    )
    assert isinstance(_raw_enrol(bundle, enrol), p.Enrolled)
    for bad in (
        enrol,  # replay
        enrol.model_copy(update={"nonce": uuid.uuid4().hex, "timestamp": time.time() - 7200}),
        enrol.model_copy(update={"nonce": uuid.uuid4().hex, "token": "enr_forged"}),
        enrol.model_copy(update={"nonce": uuid.uuid4().hex, "csr_pem": "garbage"}),
    ):
        answer = _raw_enrol(bundle, bad)
        assert isinstance(answer, p.Error) and answer.code == "enrolment_refused" and answer.fatal, answer


def test_without_certificate_only_enrolment(console: RunningConsole) -> None:
    bundle = decode_bundle(console.install_bundle())
    for msg in (p.Hello(defender_id="sneaky"), p.Events(seq=1, events=[]), p.Heartbeat()):
        with connect(bundle.ws_address, ssl=client_ssl_context(bundle.ca_pem.encode()), proxy=None) as ws:
            ws.send(p.dump(msg))
            err = p.parse(ws.recv(60))
            assert isinstance(err, p.Error) and err.code == "unauthenticated"
            with pytest.raises(ConnectionClosed):
                ws.recv(60)


def test_garbled_messages_do_not_hurt(console: RunningConsole, tmp_path: Path) -> None:
    bundle = decode_bundle(console.install_bundle())
    key, csr = make_key_and_csr("g")
    enrolled = _raw_enrol(
        bundle,
        p.Enrol(
            token=bundle.enrolment_token, nonce=uuid.uuid4().hex, timestamp=time.time(), csr_pem=csr.decode()
        ),
    )
    assert isinstance(enrolled, p.Enrolled)
    ctx = client_ssl_context(bundle.ca_pem.encode(), cert_pem=enrolled.cert_pem.encode(), key_pem=key)
    with connect(bundle.ws_address, ssl=ctx, proxy=None) as ws:
        ws.send(p.dump(p.Hello(app_name="garbled")))
        assert isinstance(p.parse(ws.recv(60)), p.PolicySnapshot)
        for raw in ("{", "null", '{"type":"events","seq":-1,"events":[]}', '{"type":"policy"}', "\x00" * 100):
            ws.send(raw)
            err = p.parse(ws.recv(60))
            assert isinstance(err, p.Error) and not err.fatal
        ws.send(p.dump(p.Events(seq=3, events=[{"id": "short"}, {"type": "process", "effect": "alert"}])))
        assert isinstance(p.parse(ws.recv(60)), p.Error)  # rejected_events
        ack = p.parse(ws.recv(60))
        assert isinstance(ack, p.Ack) and ack.seq == 3 and ack.stored == 1 and ack.rejected == 1
    # the console is fine: a normal defender still works
    c = _client(bundle, tmp_path, "after-garbage")
    c.start()
    try:
        assert c.wait_connected(30), c.last_error
    finally:
        c.stop()


def test_events_spooled_while_console_down(
    console_factory: Callable[..., RunningConsole], tmp_path: Path
) -> None:
    """Kill the console, keep producing events, restart the defender too; all arrive once it is back."""
    console = console_factory()
    app = "chan-outage-" + uuid.uuid4().hex[:8]
    bundle = decode_bundle(console.install_bundle())
    c = _client(bundle, tmp_path, app)
    c.start()
    assert c.wait_connected(30), c.last_error
    c.submit_many(_events(app, range(10)))
    assert c.wait_delivered(30)
    console.stop()
    _until(lambda: not c.connected, 15, "client noticing the outage")
    c.submit_many(_events(app, range(10, 150)))
    c.stop()  # the defender restarts while the console is away
    c2 = _client(bundle, tmp_path, app)
    assert c2.spool.pending() == 140
    c2.start()
    try:
        time.sleep(0.5)
        c2.submit_many(_events(app, range(150, 200)))
        assert not c2.connected
        console.args = ["--port", str(console.port), "--defender-port", str(console.defender_port)]
        console.start()
        assert c2.wait_delivered(120), f"{c2.spool.pending()} left; {c2.last_error}\n{console.log()[-3000:]}"
        assert c2.stats["enrolments"] == 0  # same certificate as before the restart
        with console.api() as api:
            assert _audit_count(api, app) == 200
    finally:
        c2.stop()
