"""Channel server + reference client end to end, over real TLS sockets on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from garrison.channel import protocol as p
from garrison.channel.client import DefenderChannelClient
from garrison.channel.credentials import CERT_FILE, KEY_FILE
from garrison.channel.policy_cache import load_cached_policy
from garrison.channel.server import ChannelServer, DefenderNotConnected
from garrison.pki.ca import client_ssl_context, ensure_ca, make_key_and_csr
from garrison.policy.audit import AuditEvent
from garrison.policy.model import ProcessControls, Rule, RuntimePolicy
from tests.channel.conftest import TOKEN, Pki, ServerThread, running_server
from tests.channel.sqlite_backend import SqliteBackend
from tests.polling import until_async as _until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def _hello(name: str = "app1") -> p.Hello:
    return p.Hello(defender_id=name, app_id=name, app_name=name, org="o", space="s", version="test")


def _ev(i: int, prefix: str = "ev") -> AuditEvent:
    return AuditEvent(id=f"{prefix}-{i:06d}", type="network", effect="alert", dest_port=i % 65535)


class Running:
    """A client running on the test's loop."""

    def __init__(self, client: DefenderChannelClient) -> None:
        self.client = client
        self.task = asyncio.create_task(client.run())

    async def close(self) -> None:
        await self.client.aclose()
        await self.task


def _client(pki: Pki, port: int, folder: Path, name: str = "app1", **kw: Any) -> DefenderChannelClient:
    return DefenderChannelClient(
        pki.bundle(port), folder, _hello(name), backoff_base=0.05, backoff_max=0.3, **kw
    )


async def _enrolled_context(pki: Pki, backend: SqliteBackend, port: int) -> tuple[str, ssl.SSLContext]:
    key, csr = make_key_and_csr("raw")
    async with connect(f"wss://127.0.0.1:{port}", ssl=client_ssl_context(pki.ca.cert_pem), proxy=None) as ws:
        await ws.send(
            p.dump(
                p.Enrol(
                    token=TOKEN,
                    nonce="n" * 16 + str(time.time()),
                    timestamp=time.time(),
                    csr_pem=csr.decode(),
                    requested_id="raw",
                )
            )
        )
        msg = p.parse(await ws.recv())
    assert isinstance(msg, p.Enrolled)
    return msg.defender_id, client_ssl_context(pki.ca.cert_pem, cert_pem=msg.cert_pem.encode(), key_pem=key)


async def test_enrol_connect_snapshot_push_and_cache(
    tmp_path: Path, pki: Pki, backend: SqliteBackend
) -> None:
    backend.put_policy(RuntimePolicy(rules=[Rule(name="first")]))
    seen: list[tuple[int, str]] = []
    async with running_server(backend, pki) as server:
        c = _client(
            pki, server.port, tmp_path, on_policy=lambda rev, pol: seen.append((rev, pol.rules[0].name))
        )
        r = Running(c)
        await _until(lambda: c.connected)
        assert c.defender_id.startswith("app1-")
        assert server.connected_ids() == [c.defender_id] and backend.connected(c.defender_id)
        for f in (KEY_FILE, CERT_FILE):
            assert stat.S_IMODE((tmp_path / f).stat().st_mode) == 0o600
        assert seen == [(1, "first")]
        backend.put_policy(RuntimePolicy(rules=[Rule(name="second")]))
        assert await server.notify_policy_changed() == 1
        await _until(lambda: len(seen) == 2)
        assert seen[1] == (2, "second")
        cached = load_cached_policy(tmp_path)
        assert cached is not None and cached.revision == 2 and cached.rules[0].name == "second"
        await r.close()
        await _until(lambda: not backend.connected(c.defender_id))
        assert server.connected_ids() == []


async def test_events_acked_and_stored_once(tmp_path: Path, pki: Pki, backend: SqliteBackend) -> None:
    async with running_server(backend, pki) as server:
        c = _client(pki, server.port, tmp_path, batch_size=7, window=2)
        c.submit_many([_ev(i) for i in range(50)])
        r = Running(c)
        await _until(lambda: c.spool.pending() == 0)
        c.submit_many([_ev(i) for i in range(40, 60)])  # 10 duplicates, 10 new
        await _until(lambda: c.spool.pending() == 0)
        ids = backend.event_ids()
        assert ids == [f"ev-{i:06d}" for i in range(60)]
        row = backend.db.execute("SELECT body FROM events LIMIT 1").fetchone()
        stored = json.loads(row[0])
        assert stored["defender_id"] == c.defender_id and stored["app_name"] == "app1"
        await r.close()


async def test_events_spooled_during_outage_survive_restarts(
    tmp_path: Path, pki: Pki, backend: SqliteBackend
) -> None:
    """Console down → events spool on disk; the defender restarts too; everything arrives once back."""
    st = ServerThread(backend, pki)
    port = st.server.port
    c = _client(pki, port, tmp_path)
    c.start()
    assert c.wait_policy(20)
    c.submit(_ev(1))
    assert c.wait_delivered(20)
    st.stop()
    for i in range(2, 200):
        c.submit(_ev(i))
    c.stop()  # the defender restarts while the console is still away
    c2 = _client(pki, port, tmp_path)
    assert c2.spool.pending() == 198
    c2.start()
    await asyncio.sleep(0.3)
    assert not c2.connected
    st2 = ServerThread(backend, pki, port=port)
    try:
        assert c2.wait_delivered(30)
        assert backend.event_ids() == [f"ev-{i:06d}" for i in range(1, 200)]
        assert c2.stats["enrolments"] == 0  # kept its certificate
    finally:
        c2.stop()
        st2.stop()


async def test_store_failure_keeps_events_spooled(tmp_path: Path, pki: Pki, backend: SqliteBackend) -> None:
    async with running_server(backend, pki) as server:
        backend.fail_store = True
        c = _client(pki, server.port, tmp_path)
        r = Running(c)
        await _until(lambda: c.connected)
        c.submit_many([_ev(i) for i in range(5)])
        await asyncio.sleep(0.5)
        assert c.spool.pending() == 5 and backend.event_ids() == []
        backend.fail_store = False
        await _until(lambda: c.spool.pending() == 0)
        assert len(backend.event_ids()) == 5
        await r.close()


async def test_revoked_defender_is_refused(tmp_path: Path, pki: Pki, backend: SqliteBackend) -> None:
    async with running_server(backend, pki) as server:
        c = _client(pki, server.port, tmp_path)
        r = Running(c)
        await _until(lambda: c.connected)
        backend.revoke(c.defender_id)
        assert await server.disconnect_defender(c.defender_id)
        await _until(lambda: c.revoked)
        backend.revoke(c.defender_id)
        connects = c.stats["connects"]
        await asyncio.sleep(1.0)  # it retries (slowly) and is refused at connect each time
        assert not c.connected and c.stats["connects"] == connects and "removed" in c.last_error
        assert server.connected_ids() == []
        await r.close()


async def test_replayed_or_stale_enrolment_refused(pki: Pki, backend: SqliteBackend) -> None:
    async with running_server(backend, pki) as server:
        _, csr = make_key_and_csr("x")
        enrol = p.Enrol(token=TOKEN, nonce="a" * 32, timestamp=time.time(), csr_pem=csr.decode())
        answers = []
        for msg in (
            enrol,
            enrol,
            enrol.model_copy(update={"nonce": "b" * 32, "timestamp": time.time() - 3600}),
            enrol.model_copy(update={"nonce": "c" * 32, "token": "wrong"}),
            enrol.model_copy(update={"nonce": "d" * 32, "csr_pem": "not a csr"}),
        ):
            async with connect(
                f"wss://127.0.0.1:{server.port}", ssl=client_ssl_context(pki.ca.cert_pem), proxy=None
            ) as ws:
                await ws.send(p.dump(msg))
                answers.append(p.parse(await ws.recv()))
        assert isinstance(answers[0], p.Enrolled)
        for a in answers[1:]:
            assert isinstance(a, p.Error) and a.code == "enrolment_refused" and a.fatal
        assert "replayed" in answers[1].message and "stale" in answers[2].message  # type: ignore[union-attr]


@pytest.mark.parametrize("first", [p.Hello(), p.Events(seq=1, events=[]), p.Heartbeat()])
async def test_no_certificate_can_only_enrol(pki: Pki, backend: SqliteBackend, first: p._Msg) -> None:
    async with running_server(backend, pki) as server:
        async with connect(
            f"wss://127.0.0.1:{server.port}", ssl=client_ssl_context(pki.ca.cert_pem), proxy=None
        ) as ws:
            await ws.send(p.dump(first))
            err = p.parse(await ws.recv())
            assert isinstance(err, p.Error) and err.code == "unauthenticated" and err.fatal
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert server.connected_ids() == []


async def test_certificate_from_another_ca_is_refused(
    tmp_path: Path, pki: Pki, backend: SqliteBackend
) -> None:
    other = ensure_ca(tmp_path / "other")
    key, csr = make_key_and_csr("evil")
    cert = other.sign_defender_csr(csr, "evil")
    async with running_server(backend, pki) as server:
        ctx = client_ssl_context(pki.ca.cert_pem, cert_pem=cert, key_pem=key)
        with pytest.raises((ssl.SSLError, ConnectionClosed, InvalidHandshake, OSError)):
            async with connect(f"wss://127.0.0.1:{server.port}", ssl=ctx, proxy=None) as ws:
                await ws.send(p.dump(p.Hello()))
                await ws.recv()
        assert server.connected_ids() == []


async def test_garbled_messages_get_errors_and_server_survives(pki: Pki, backend: SqliteBackend) -> None:
    async with running_server(backend, pki) as server:
        did, ctx = await _enrolled_context(pki, backend, server.port)
        async with connect(f"wss://127.0.0.1:{server.port}", ssl=ctx, proxy=None) as ws:
            await ws.send(p.dump(p.Hello(defender_id="someone-else")))
            snap = p.parse(await ws.recv())
            assert isinstance(snap, p.PolicySnapshot)
            assert server.connected_ids() == [did]  # the certificate decides the id
            for raw in ("{", "[1]", '{"type":"nope"}', '{"type":"events"}', b"\x00\xff", '{"type":"enrol"}'):
                await ws.send(raw)
                err = p.parse(await ws.recv())
                assert isinstance(err, p.Error) and not err.fatal, raw
            good = _ev(1).model_dump(mode="json")
            await ws.send(json.dumps({"type": "events", "seq": 5, "events": [good, {"type": "bogus"}, 42]}))
            err = p.parse(await ws.recv())
            assert isinstance(err, p.Error) and err.code == "rejected_events" and err.ref == "5"
            ack = p.parse(await ws.recv())
            assert isinstance(ack, p.Ack) and (ack.seq, ack.stored, ack.rejected) == (5, 1, 2)
            await ws.send(p.dump(p.Heartbeat(stats={"ok": 1})))
            await _until(lambda: backend.stats_of(did) == {"ok": 1})
        # a fresh connection still works after all that
        _, ctx2 = await _enrolled_context(pki, backend, server.port)
        async with connect(f"wss://127.0.0.1:{server.port}", ssl=ctx2, proxy=None) as ws:
            await ws.send(p.dump(p.Hello()))
            assert isinstance(p.parse(await ws.recv()), p.PolicySnapshot)


async def test_flood_of_garbage_closes_connection(pki: Pki, backend: SqliteBackend) -> None:
    async with running_server(backend, pki) as server:
        _, ctx = await _enrolled_context(pki, backend, server.port)
        async with connect(f"wss://127.0.0.1:{server.port}", ssl=ctx, proxy=None) as ws:
            await ws.send(p.dump(p.Hello()))
            await ws.recv()
            errors = 0
            with pytest.raises(ConnectionClosed):
                for _ in range(100):
                    await ws.send("garbage")
                    msg = p.parse(await ws.recv())
                    assert isinstance(msg, p.Error)
                    errors += 1
            assert errors == 21  # MAX_BAD_MESSAGES answered, then a fatal error and close


async def test_command_round_trip(tmp_path: Path, pki: Pki, backend: SqliteBackend) -> None:
    def on_command(name: str, args: dict[str, object]) -> object:
        if name == "upload_forensics":
            return {"records": [{"pid": 1, "exe": "/bin/sh"}], "limit": args.get("limit")}
        raise ValueError(f"unknown command {name}")

    async with running_server(backend, pki) as server:
        c = _client(pki, server.port, tmp_path, on_command=on_command)
        r = Running(c)
        await _until(lambda: c.connected)
        res = await server.send_command(c.defender_id, "upload_forensics", {"limit": 10}, timeout=10)
        assert res.ok and res.data == {"records": [{"pid": 1, "exe": "/bin/sh"}], "limit": 10}
        res = await server.send_command(c.defender_id, "reboot", timeout=10)
        assert not res.ok and "unknown command" in res.error
        await r.close()


async def test_same_defender_reconnecting_replaces_old_connection(
    tmp_path: Path, pki: Pki, backend: SqliteBackend
) -> None:
    async with running_server(backend, pki) as server:
        did, ctx = await _enrolled_context(pki, backend, server.port)
        async with connect(f"wss://127.0.0.1:{server.port}", ssl=ctx, proxy=None) as old:
            await old.send(p.dump(p.Hello()))
            await old.recv()
            async with connect(f"wss://127.0.0.1:{server.port}", ssl=ctx, proxy=None) as new:
                await new.send(p.dump(p.Hello()))
                assert isinstance(p.parse(await new.recv()), p.PolicySnapshot)
                err = p.parse(await old.recv())
                assert isinstance(err, p.Error) and err.code == "replaced"
                await asyncio.sleep(0.1)
                assert server.connected_ids() == [did] and backend.connected(did)


async def test_slow_defender_does_not_stall_others(tmp_path: Path, pki: Pki, backend: SqliteBackend) -> None:
    """One defender never reads; policies (large) still reach the others promptly."""
    # ~600 kB each and cheap to validate: 30 of them fill the stuck socket's buffers (4 MB send max)
    big = RuntimePolicy(
        rules=[
            Rule(name=f"r{i}", processes=ProcessControls(deny=[f"/opt/{j}/" + "x" * 500 for j in range(60)]))
            for i in range(20)
        ]
    )
    async with running_server(backend, pki) as server:
        stuck_id, ctx = await _enrolled_context(pki, backend, server.port)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a defender that stops reading
        sock.connect(("127.0.0.1", server.port))
        stuck = await connect(
            f"wss://127.0.0.1:{server.port}", ssl=ctx, proxy=None, max_queue=1, max_size=None, sock=sock
        )
        await stuck.send(p.dump(p.Hello()))
        got: dict[int, int] = {}
        clients = [
            _client(
                pki,
                server.port,
                tmp_path / f"c{i}",
                name=f"c{i}",
                on_policy=lambda rev, pol, i=i: got.__setitem__(i, rev),
                cache_policy=False,
            )
            for i in range(3)
        ]
        runs = [Running(c) for c in clients]
        await _until(lambda: all(c.connected for c in clients))
        for _ in range(30):
            backend.put_policy(big)
            await server.notify_policy_changed()
        last = (await backend.current_policy()).revision
        await _until(lambda: all(got.get(i) == last for i in range(3)), timeout=30)
        stuck_peer = server._peers[stuck_id]  # really stuck: its writer is blocked, the newest waits
        assert stuck_peer.sending
        for r in runs:
            await r.close()
        stuck.transport.abort()


async def test_server_port_zero_and_stop_marks_disconnected(
    tmp_path: Path, pki: Pki, backend: SqliteBackend
) -> None:
    server = ChannelServer(backend, pki.server_context(), "127.0.0.1", 0, policy_poll_interval=0.1)
    await server.start()
    assert server.port > 0
    c = _client(pki, server.port, tmp_path)
    r = Running(c)
    await _until(lambda: c.connected)
    # a policy change made behind the server's back (another console replica) is found by polling
    backend.put_policy(RuntimePolicy(rules=[Rule(name="via-poll")]))
    await _until(lambda: c.policy is not None and c.policy.revision == 1)
    await server.stop()
    await _until(lambda: not backend.connected(c.defender_id))
    await r.close()


async def test_big_events_are_split_into_small_batches(
    tmp_path: Path, pki: Pki, backend: SqliteBackend
) -> None:
    async with running_server(backend, pki) as server:
        c = _client(pki, server.port, tmp_path)
        big = [
            AuditEvent(id=f"big-{i:04d}", type="process", effect="alert", argv=["a" * 1000] * 200)
            for i in range(30)
        ]
        c.submit_many(big)  # ~6 MB in all: more than 1 MiB per batch would be sent otherwise
        r = Running(c)
        await _until(lambda: c.spool.pending() == 0)
        assert len(backend.event_ids()) == 30 and c.stats["acked_batches"] >= 6
        await r.close()


async def test_heartbeats_carry_spool_stats(tmp_path: Path, pki: Pki, backend: SqliteBackend) -> None:
    async with running_server(backend, pki) as server:
        c = _client(pki, server.port, tmp_path, heartbeat_interval=0.05)
        r = Running(c)
        await _until(lambda: c.connected)
        await _until(lambda: (backend.stats_of(c.defender_id) or {}).get("policy_revision") == 0)
        stats = backend.stats_of(c.defender_id)
        assert stats is not None and stats["spooled"] == 0 and stats["connects"] == 1
        await r.close()


async def test_reenrols_when_certificate_is_gone(tmp_path: Path, pki: Pki, backend: SqliteBackend) -> None:
    async with running_server(backend, pki) as server:
        c = _client(pki, server.port, tmp_path)
        r = Running(c)
        await _until(lambda: c.connected)
        first_id = c.defender_id
        await r.close()
        c.spool.close()
        again = _client(pki, server.port, tmp_path)
        assert again.defender_id == first_id  # the certificate on disk is reused
        again.spool.close()
        (tmp_path / CERT_FILE).unlink()
        c3 = _client(pki, server.port, tmp_path)
        assert c3.defender_id == ""
        r3 = Running(c3)
        await _until(lambda: c3.connected)
        assert c3.stats["enrolments"] == 1 and c3.defender_id not in ("", first_id)
        with pytest.raises(DefenderNotConnected):
            await server.send_command(first_id, "status")
        await r3.close()
