"""The console side of the defender channel: WebSocket over TLS, one task pair per defender.

TLS asks for a client certificate but does not require one (CERT_OPTIONAL): a connection without a
certificate may only enrol, everything else needs a defender certificate from the console CA whose
CN is the defender id. Each connection has its own bounded outbox drained by its own writer task, so
a policy push is "set a slot and wake the writer" for every defender — a slow or stuck defender only
delays itself, and one that falls too far behind is disconnected (it reconnects and gets a fresh
snapshot).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from garrison.channel import protocol as p
from garrison.channel.backend import ChannelBackend, DefenderHello, EnrolmentRefused
from garrison.channel.budget import DEFAULT_BUDGET_BYTES, ByteBudget
from garrison.channel.rate import Limits, PerKeyBudget
from garrison.pki.ca import DEFENDER_OU
from garrison.policy.audit import AuditEvent
from garrison.policy.model import RuntimePolicy

log = logging.getLogger("garrison.channel.server")

HANDSHAKE_TIMEOUT_S = 10.0
"""TLS + WebSocket opening handshake: a connection that does not finish it in time is closed"""
ENROL_TIMEOUT_S = 30.0
HELLO_TIMEOUT_S = 30.0
MAX_BAD_MESSAGES = 20
OUTBOX_LIMIT = 256
BROADCAST_BUFFER_LIMIT = 256 * 1024  # bytes already waiting in a socket's buffer: use the slow path
MAX_SMALL_MESSAGE_BYTES = 64 * 1024
"""hello, heartbeat, enrol: far above what a defender sends (schema-bounded fields)"""
MAX_EVENT_BYTES = 256 * 1024
"""one event; the client (spool) trims an event above this before sending it"""
MAX_EVENTS_MESSAGE_BYTES = 4 * 1024 * 1024
"""one batch; the client keeps batches under 1 MiB (plus at most one event)"""
MAX_PROFILE_MESSAGE_BYTES = 2 * 1024 * 1024
"""one learning report: at most MAX_PROFILE_ITEMS schema-bounded items (the client splits)"""
ACCEPT_BACKLOG = 4096  # capped by net.core.somaxconn
RECEIVE_BUFFER_BYTES = 32 * 1024  # the kernel doubles it: ~64 KiB per connection
SNAPSHOT_TTL_S = 1.0
"""how old the connect-time policy snapshot may be; pushes refresh it, and a revision stored by
another console replica reaches defenders through the replica's policy poll/notification anyway"""
MAX_QUEUE = 1
"""frames a connection buffers beyond the message its read loop holds (websockets' default, 16, let
1,000 busy defenders park 4 batches each in the console's memory)"""
_CLOSE_POLICY = 1008  # RFC 6455 "policy violation"
_CLOSE_OVERLOAD = 1013  # "try again later"


class DefenderNotConnected(LookupError):
    """send_command() to a defender that has no live connection to this console."""


class _Peer:
    """One authenticated defender connection and its writer."""

    def __init__(
        self, defender_id: str, conn: ServerConnection, hello: p.Hello, *, bound: bool = False
    ) -> None:
        self.defender_id = defender_id
        self.conn = conn
        self.hello = hello
        self.bound = bound
        """the app identity in `hello` is the one bound at enrolment: it overrides what events claim"""
        self.policy_slot: str | None = None  # newest policy wins; older unsent ones are dropped
        self.outbox: collections.deque[str] = collections.deque()
        self.wake = asyncio.Event()
        self.commands: dict[str, asyncio.Future[p.CommandResult]] = {}
        self.writer: asyncio.Task[None] | None = None
        self.closer: asyncio.Task[None] | None = None
        self.sending = False

    def can_take_broadcast(self) -> bool:
        """Nothing queued and the socket keeps up: a direct write cannot reorder or pile up."""
        if self.policy_slot is not None or self.outbox or self.sending:
            return False
        transport = self.conn.transport
        return transport is not None and transport.get_write_buffer_size() < BROADCAST_BUFFER_LIMIT

    def push_policy(self, text: str) -> None:
        self.policy_slot = text
        self.wake.set()

    def send(self, msg: p._Msg) -> None:
        if len(self.outbox) >= OUTBOX_LIMIT:
            log.warning("defender %s does not read its messages; disconnecting", self.defender_id)
            self.outbox.clear()
            self.closer = asyncio.get_running_loop().create_task(
                self.conn.close(_CLOSE_OVERLOAD, "too slow: reconnect for a fresh snapshot")
            )
            return
        text = p.dump(msg)
        # Nothing queued and the socket keeps up: write now (an ack per stored batch would
        # otherwise wake the writer task and go through websockets' send path each time).
        if self.can_take_broadcast() and _write_frame(self.conn, _text_frame(text)):
            return
        self.outbox.append(text)
        self.wake.set()

    async def run_writer(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.wake.wait()
                self.wake.clear()
                while True:
                    if self.policy_slot is not None:
                        text, self.policy_slot = self.policy_slot, None
                    elif self.outbox:
                        text = self.outbox.popleft()
                    else:
                        break
                    self.sending = True
                    try:
                        await self.conn.send(text)
                    finally:
                        self.sending = False


@dataclass
class _Snapshot:
    policy: RuntimePolicy
    text: str
    at: float


def listen_socket(host: str, port: int) -> socket.socket:
    """The channel's listening socket: a deep accept backlog (a reconnecting fleet arrives at once;
    asyncio's default of 100 drops SYNs and turns a restart into minutes of retries) and a small
    receive buffer, which accepted connections inherit: a TLS read never returns more than the
    socket holds, so each connection's 256 KiB TLS read buffer is touched only that far and the
    console's memory stays proportional to its connections, not to how much they send at once."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        sock.bind(addr)
        sock.listen(ACCEPT_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _peer_identity(conn: ServerConnection) -> str | None:
    """CN of a verified defender certificate, or None when the peer sent no certificate."""
    ssl_obj = conn.transport.get_extra_info("ssl_object") if conn.transport else None
    if ssl_obj is None:
        return None
    cert = ssl_obj.getpeercert()
    if not cert:
        return None
    attrs = {k: v for rdn in cert.get("subject", ()) for (k, v) in rdn}
    if attrs.get("organizationalUnitName") != DEFENDER_OU or not attrs.get("commonName"):
        return ""  # a certificate of the console CA, but not a defender's
    return str(attrs["commonName"])


class ChannelServer:
    """Serves defenders on `host:port` (port 0 picks a free one; `.port` tells which)."""

    def __init__(
        self,
        backend: ChannelBackend,
        ssl_context: ssl.SSLContext | None,
        host: str = "127.0.0.1",
        port: int = 8084,
        *,
        policy_poll_interval: float | None = 5.0,
        ping_interval: float | None = 20.0,
        admission: Callable[[], str | None] | None = None,
        retry_after_s: int = 30,
        ingest_budget_bytes: int = DEFAULT_BUDGET_BYTES,
        profile_limits: Limits | None = None,
    ) -> None:
        """`policy_poll_interval`: also push when the stored revision changed behind our back (another
        console replica on the same PostgreSQL took the PUT); None disables polling.
        `admission()` returns why a new connection must be refused now (e.g. file descriptors near
        the limit) or None; a refused defender gets HTTP 503 with `Retry-After: retry_after_s`.
        `ingest_budget_bytes`: messages being validated and stored at once, all connections together
        (garrison.channel.budget): bounds the console's memory whatever the fleet sends.
        `profile_limits`: learning reports per defender (garrison.channel.rate)."""
        self.backend = backend
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.policy_poll_interval = policy_poll_interval
        self.ping_interval = ping_interval
        self._server: Server | None = None
        self._peers: dict[str, _Peer] = {}
        self._pushed_revision: int | None = None
        self._snapshot: _Snapshot | None = None
        self._poller: asyncio.Task[None] | None = None
        self._push_lock = asyncio.Lock()
        self.admission = admission
        self.retry_after_s = retry_after_s
        self.budget = ByteBudget(ingest_budget_bytes)
        self.refused: collections.Counter[str] = collections.Counter()
        """connections refused before the WebSocket opened, by reason"""
        self.profile_budget = PerKeyBudget(profile_limits or Limits())
        self.profile_refused: collections.Counter[str] = collections.Counter()
        """learning reports refused, by reason: rate, bytes (per-defender budget), size (one message
        over its limit), workload (a report naming a workload the defender may not report for)"""

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            sock=listen_socket(self.host, self.port),
            ssl=self.ssl_context,
            max_size=p.MAX_MESSAGE_BYTES,
            # Read ahead at most MAX_QUEUE message per connection while its read loop waits for the
            # store or the ingest budget; the rest stays in the socket (and the defender's spool).
            max_queue=MAX_QUEUE,
            compression=None,  # CPU matters more than bytes on a 2-core console
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
            server_header=None,
            process_request=self._admit,
            open_timeout=HANDSHAKE_TIMEOUT_S,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        if self.policy_poll_interval:
            self._pushed_revision = (await self.backend.current_policy()).revision
            self._poller = asyncio.create_task(self._poll_policy(self.policy_poll_interval))

    def _admit(self, conn: ServerConnection, _request: Request) -> Response | None:
        reason = self.admission() if self.admission is not None else None
        if reason is None:
            return None
        self.refused[reason] += 1
        response = conn.respond(503, f"the console cannot take more defenders now ({reason}); retry later\n")
        response.headers["Retry-After"] = str(self.retry_after_s)
        return response

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # -- API for the console -----------------------------------------------------------------
    def connected_ids(self) -> list[str]:
        return sorted(self._peers)

    @property
    def pushed_revision(self) -> int | None:
        """The policy revision last pushed to the defenders (None before the first push)."""
        return self._pushed_revision

    def connected_count(self) -> int:
        return len(self._peers)

    async def notify_policy_changed(self) -> int:
        """Push the current policy to every connected defender; returns how many were queued."""
        async with self._push_lock:
            policy = await self.backend.current_policy()
            self._pushed_revision = policy.revision
            text = p.dump(p.PolicySnapshot(revision=policy.revision, policy=policy))
            self._snapshot = _Snapshot(policy, text, time.monotonic())
            peers = list(self._peers.values())
            # Fast path: the frame is built once (server frames are unmasked, so it is the same bytes
            # for every defender) and written straight into each idle connection's TLS transport.
            # Busy or slow defenders get the policy through their own writer (newest revision wins).
            frame = _text_frame(text)
            for peer in peers:
                if not (peer.can_take_broadcast() and _write_frame(peer.conn, frame)):
                    peer.push_policy(text)
            return len(peers)

    async def send_command(
        self, defender_id: str, name: str, args: dict[str, Any] | None = None, *, timeout: float = 60.0
    ) -> p.CommandResult:
        """Ask a connected defender to do something (e.g. 'upload_forensics') and wait for its reply."""
        peer = self._peers.get(defender_id)
        if peer is None:
            raise DefenderNotConnected(defender_id)
        cid = uuid.uuid4().hex
        fut: asyncio.Future[p.CommandResult] = asyncio.get_running_loop().create_future()
        peer.commands[cid] = fut
        try:
            peer.send(p.Command(id=cid, name=name, args=args or {}))
            return await asyncio.wait_for(fut, timeout)
        finally:
            peer.commands.pop(cid, None)

    async def disconnect_defender(self, defender_id: str, reason: str = "was removed by an operator") -> bool:
        """Close a defender's connection now (e.g. after an operator deleted it)."""
        peer = self._peers.get(defender_id)
        if peer is None:
            return False
        await self._fatal(peer.conn, "revoked", f"defender {defender_id} {reason}")
        return True

    # -- connection handling -----------------------------------------------------------------
    async def _poll_policy(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                policy = await self.backend.current_policy()
                if policy.revision != self._pushed_revision:
                    await self.notify_policy_changed()
            except Exception:
                log.exception("policy poll failed")

    @staticmethod
    async def _send(conn: ServerConnection, msg: p._Msg) -> None:
        with contextlib.suppress(ConnectionClosed):
            await conn.send(p.dump(msg))

    async def _fatal(self, conn: ServerConnection, code: p.ErrorCode, message: str) -> None:
        await self._send(conn, p.Error(code=code, message=message, fatal=True))
        with contextlib.suppress(ConnectionClosed):
            await conn.close(_CLOSE_POLICY, message[:120])

    async def _handle(self, conn: ServerConnection) -> None:
        # Until a defender has said hello, nothing it may send is large (enrol, hello).
        conn.protocol.max_message_size = MAX_SMALL_MESSAGE_BYTES
        try:
            identity = _peer_identity(conn)
            if identity is None:
                await self._serve_enrolment(conn)
            elif identity == "":
                await self._fatal(conn, "unauthenticated", "certificate is not a defender certificate")
            else:
                await self._serve_defender(conn, identity)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("channel connection failed")
            await self._fatal(conn, "internal", "internal error in the console; reconnect later")

    async def _serve_enrolment(self, conn: ServerConnection) -> None:
        """No client certificate: exactly one enrolment, then the defender reconnects with its cert."""
        for _ in range(3):
            try:
                raw = await asyncio.wait_for(conn.recv(), ENROL_TIMEOUT_S)
            except TimeoutError:
                await self._fatal(conn, "unauthenticated", "enrolment timed out")
                return
            try:
                msg = p.parse(raw)
            except p.ProtocolError as exc:
                await self._send(conn, p.Error(code=exc.code, message=str(exc)))
                continue
            if not isinstance(msg, p.Enrol):
                await self._fatal(
                    conn,
                    "unauthenticated",
                    f"'{msg.type}' needs a defender certificate; connect without one only to enrol",
                )
                return
            try:
                defender_id, cert = await self.backend.enrol(
                    msg.token,
                    msg.nonce,
                    msg.timestamp,
                    msg.csr_pem.encode(),
                    msg.requested_id,
                    msg.app,
                    msg.defender_type,
                )
            except EnrolmentRefused as exc:
                await self._fatal(conn, "enrolment_refused", str(exc) or "enrolment refused")
                return
            except ValueError as exc:  # e.g. an unparseable CSR
                await self._fatal(conn, "enrolment_refused", f"bad enrolment request: {exc}")
                return
            await self._send(conn, p.Enrolled(defender_id=defender_id, cert_pem=cert.decode()))
            await conn.close()
            return
        await self._fatal(conn, "malformed", "too many malformed messages")

    async def _serve_defender(self, conn: ServerConnection, defender_id: str) -> None:
        if await self.backend.is_revoked(defender_id):
            await self._fatal(conn, "revoked", f"defender {defender_id} was removed by an operator")
            return
        hello = await self._await_hello(conn)
        if hello is None:
            return
        conn.protocol.max_message_size = p.MAX_MESSAGE_BYTES
        remote = conn.remote_address[0] if conn.remote_address else ""
        bound = await self.backend.defender_connected(
            DefenderHello(
                defender_id=defender_id,
                app_id=hello.app_id,
                app_name=hello.app_name,
                org=hello.org,
                space=hello.space,
                app_guid=hello.app_guid,
                instance=hello.instance,
                version=hello.version,
                hostname=hello.hostname,
                kernel=hello.kernel,
                remote_addr=str(remote),
            )
        )
        if bound is not None:
            hello = hello.model_copy(update=dict(bound))
        peer = _Peer(
            defender_id, conn, hello, bound=bound is not None and bool(bound.app_name or bound.app_guid)
        )
        old = self._peers.get(defender_id)
        self._peers[defender_id] = peer
        if old is not None:
            await self._fatal(old.conn, "replaced", "a newer connection of this defender took over")
        peer.writer = asyncio.create_task(peer.run_writer())
        try:
            verdict = await self._verdict(hello)
            snap = await self._current_snapshot()
            # No await between taking the snapshot and queuing it: a push that runs meanwhile
            # either finds it queued (and replaces it) or has already refreshed the snapshot.
            peer.push_policy(
                snap.text
                if verdict is None
                else p.dump(
                    p.PolicySnapshot(revision=snap.policy.revision, policy=snap.policy, verdict=verdict)
                )
            )
            await self._read_loop(peer)
        finally:
            peer.writer.cancel()
            for fut in peer.commands.values():
                if not fut.done():
                    fut.set_exception(DefenderNotConnected(defender_id))
            if self._peers.get(defender_id) is peer:
                del self._peers[defender_id]
                await self.backend.defender_disconnected(defender_id)

    async def _current_snapshot(self) -> _Snapshot:
        """The policy every new connection starts with, read from the store and encoded at most once
        per SNAPSHOT_TTL_S (a reconnecting fleet would otherwise read, validate and encode it once
        per defender); a push (notify_policy_changed) refreshes it at once."""
        snap = self._snapshot
        if snap is None or time.monotonic() - snap.at > SNAPSHOT_TTL_S:
            policy = await self.backend.current_policy()
            newest = self._snapshot  # a push may have stored a newer one while we read
            if newest is None or newest.policy.revision <= policy.revision:
                text = p.dump(p.PolicySnapshot(revision=policy.revision, policy=policy))
                self._snapshot = _Snapshot(policy, text, time.monotonic())
        assert self._snapshot is not None
        return self._snapshot

    async def _verdict(self, hello: p.Hello) -> p.DropletVerdict | None:
        """The run-time gate's answer; a failing lookup omits it (the defender then decides by its
        fail-open setting) rather than dropping the connection."""
        if not hello.droplet_digest:
            return None
        try:
            raw = await self.backend.droplet_verdict(hello.droplet_digest, hello.app_guid)
            return p.DropletVerdict.model_validate(
                {k: raw.get(k) for k in ("digest", "verdict", "effect", "reasons") if raw.get(k) is not None}
            )
        except Exception:
            log.exception("verdict lookup for %s failed", hello.droplet_digest)
            return None

    async def _await_hello(self, conn: ServerConnection) -> p.Hello | None:
        for _ in range(3):
            try:
                raw = await asyncio.wait_for(conn.recv(), HELLO_TIMEOUT_S)
            except TimeoutError:
                await self._fatal(conn, "malformed", "expected 'hello' first")
                return None
            try:
                msg = p.parse(raw)
            except p.ProtocolError as exc:
                await self._send(conn, p.Error(code=exc.code, message=str(exc)))
                continue
            if isinstance(msg, p.Hello):
                return msg
            await self._send(conn, p.Error(code="malformed", message=f"expected 'hello', got '{msg.type}'"))
        await self._fatal(conn, "malformed", "no valid 'hello' received")
        return None

    async def _read_loop(self, peer: _Peer) -> None:
        bad = [0]
        while True:
            try:
                # Text frames as bytes: pydantic validates UTF-8 while it parses, so websockets'
                # own decode to str would be a second pass over every batch.
                raw = await peer.conn.recv(decode=False)
            except ConnectionClosedOK:
                return
            taken = await self.budget.acquire(len(raw))  # held until the batch is stored and acked
            try:
                if not await self._handle_message(peer, raw, bad):
                    return
            finally:
                self.budget.release(taken)

    async def _handle_message(self, peer: _Peer, raw: str | bytes, bad: list[int]) -> bool:
        """One message from a defender; False = the connection is closed."""
        too_big = _oversized(raw)
        is_profile = _is_profile(raw)
        if too_big:
            if is_profile:
                self.profile_refused["size"] += 1
            return await self._malformed(peer, bad, "malformed", too_big)
        if is_profile and not self._profile_admitted(peer, len(raw)):
            return True
        batch = p.parse_event_batch(raw)
        if batch is not None:
            good, rejected = _split_oversized(batch.events, len(raw))
            return await self._store(peer, batch.seq, self._stamp(peer, good), rejected)
        try:
            msg = p.parse(raw)
        except p.ProtocolError as exc:
            return await self._malformed(peer, bad, exc.code, str(exc))
        if isinstance(msg, p.Events):
            return await self._ingest(peer, msg)
        if isinstance(msg, p.Heartbeat):
            await self.backend.heartbeat(peer.defender_id, msg.stats)
        elif isinstance(msg, p.Workloads):
            why = await self.backend.workloads(peer.defender_id, msg)
            if why:
                peer.send(p.Error(code="unsupported", message=why))
        elif isinstance(msg, p.ProfileReport):
            # a report whose type was not in its head was held to the small-message limit: budget it now
            if is_profile or self._profile_admitted(peer, len(raw)):
                await self._profile(peer, msg)
        elif isinstance(msg, p.CommandResult):
            fut = peer.commands.get(msg.id)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        else:
            peer.send(p.Error(code="unsupported", message=f"'{msg.type}' is not expected from a defender"))
        return True

    async def _malformed(self, peer: _Peer, bad: list[int], code: p.ErrorCode, message: str) -> bool:
        bad[0] += 1
        if bad[0] > MAX_BAD_MESSAGES:
            await self._fatal(peer.conn, "malformed", "too many malformed messages")
            return False
        peer.send(p.Error(code=code, message=message))
        return True

    def _profile_admitted(self, peer: _Peer, size: int) -> bool:
        """Within the defender's budget of learning reports (checked before parsing); else refused with
        an error that says so. Nothing is lost: counts are cumulative, a later report carries them."""
        over = self.profile_budget.take(peer.defender_id, size)
        if not over:
            return True
        self.profile_refused[over] += 1
        peer.send(p.Error(code="rate_limited", message=(
            f"profile report refused: over this defender's budget of {self.profile_budget.limits.describe()} "
            f"({'reports' if over == 'rate' else 'bytes'}); counts are cumulative, send fewer, larger reports")))
        return False

    async def _profile(self, peer: _Peer, msg: p.ProfileReport) -> None:
        """A learning report, stored under the bound app identity (never what the defender claims).
        Counts are cumulative per defender run, so no ack is needed: a lost report heals with the next."""
        store = getattr(self.backend, "store_profile", None)
        if store is None:
            peer.send(p.Error(code="unsupported", message="this console does not keep learning profiles"))
            return
        try:
            await store(peer.defender_id, _identity(peer), msg)
        except p.ProfileRefused as exc:
            self.profile_refused["workload"] += 1
            peer.send(p.Error(code="profile_refused", message=str(exc)[:4000]))
        except Exception:
            log.exception("storing the profile report of %s failed", peer.defender_id)
            peer.send(p.Error(code="internal", message="could not store the profile report"))

    async def _ingest(self, peer: _Peer, msg: p.Events) -> bool:
        """Slow path for a batch with invalid events: keep the good ones, report the others."""
        fill = _identity_filler(peer)
        good: list[AuditEvent] = []
        rejected: list[str] = []
        for raw_event in msg.events:
            try:
                good.append(AuditEvent.model_validate(fill(raw_event)))
            except (ValidationError, TypeError) as exc:
                rejected.append(str(exc).splitlines()[0] if str(exc) else "invalid event")
        good, too_big = _split_oversized(good, MAX_EVENTS_MESSAGE_BYTES)
        return await self._store(peer, msg.seq, good, rejected + too_big)

    @staticmethod
    def _stamp(peer: _Peer, events: list[AuditEvent]) -> list[AuditEvent]:
        """Events carry the authenticated defender id (never the one claimed) and the app identity:
        the bound one replaces whatever an event claims (an app's defender reports on its own app
        only); without a bound identity, empty fields are filled from the hello."""
        ident = _identity(peer)
        bound = peer.bound
        for e in events:
            # Plain dict writes: these are validated models and pydantic's __setattr__ costs ~3 µs each.
            d = e.__dict__
            d["defender_id"] = peer.defender_id
            for k, v in ident.items():
                if bound or not d[k]:
                    d[k] = v
        return events

    async def _store(self, peer: _Peer, seq: int, good: list[AuditEvent], rejected: list[str]) -> bool:
        """Store, then ack. False = the connection was closed (store failure: nothing acked)."""
        try:
            stored = await self.backend.store_events(peer.defender_id, good) if good else 0
        except Exception:
            log.exception("storing events of %s failed", peer.defender_id)
            # No ack: the defender keeps the batch and re-sends it after reconnecting.
            await self._fatal(peer.conn, "internal", "could not store events; they stay spooled")
            return False
        if rejected:
            log.warning(
                "defender %s sent %d invalid events: %s", peer.defender_id, len(rejected), rejected[0]
            )
            peer.send(
                p.Error(
                    code="rejected_events",
                    message=f"{len(rejected)} invalid events dropped: {rejected[0]}"[:4000],
                    ref=str(seq),
                )
            )
        peer.send(p.Ack(seq=seq, stored=stored, rejected=len(rejected)))
        return True


def _text_frame(text: str) -> bytes:
    """A complete server-to-client text frame (unmasked, uncompressed: compression is off)."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def _write_frame(conn: ServerConnection, frame: bytes) -> bool:
    """Write a complete, already serialised frame to an open connection; False = not written (the
    caller queues the message instead). What websockets' broadcast() does per connection, minus
    building the same frame again for each one."""
    if conn.protocol.state is not State.OPEN or conn.send_in_progress is not None:
        return False
    if conn.protocol.expect_continuation_frame or conn.transport.is_closing():
        return False
    try:
        conn.transport.write(frame)
    except Exception as exc:  # e.g. the transport closed under us: the writer's send reports it
        log.debug("direct policy write failed: %s", exc)
        return False
    return True


def _is_profile(raw: str | bytes) -> bool:
    head = raw[:64].decode(errors="replace") if isinstance(raw, bytes) else raw[:64]
    return '"type":"profile"' in head.replace(" ", "")


def _oversized(raw: str | bytes) -> str:
    """Why a message is too large for its type ("" when it is not): only event batches, a cell's
    workload lists and command results may be large, so a defender cannot make the console hold (and store) megabytes of
    heartbeat stats or hello fields."""
    size = len(raw)
    if size <= MAX_SMALL_MESSAGE_BYTES:
        return ""
    head = raw[:64].decode(errors="replace") if isinstance(raw, bytes) else raw[:64]
    head = head.replace(" ", "")
    if '"type":"events"' in head or '"type":"workloads"' in head:
        limit = MAX_EVENTS_MESSAGE_BYTES
    elif '"type":"command_result"' in head:
        limit = p.MAX_MESSAGE_BYTES
    elif '"type":"profile"' in head:
        limit = MAX_PROFILE_MESSAGE_BYTES
    else:
        limit = MAX_SMALL_MESSAGE_BYTES
    if size <= limit:
        return ""
    return f"message of {size} bytes refused: the limit for this message type is {limit} bytes"


def _event_size(e: AuditEvent) -> int:
    """Cheap upper-bound-ish size of an event's unbounded parts (argv items, extra); the other
    fields have schema limits."""
    n = len(e.message) + len(e.exe or "") + len(e.cwd or "")
    if e.argv:
        n += sum(map(len, e.argv))
    if e.extra:
        n += len(repr(e.extra))
    return n


def _split_oversized(events: list[AuditEvent], message_size: int) -> tuple[list[AuditEvent], list[str]]:
    """Events over MAX_EVENT_BYTES are refused (the client trims bigger ones before sending)."""
    if message_size <= MAX_EVENT_BYTES:
        return events, []
    good = [e for e in events if _event_size(e) <= MAX_EVENT_BYTES]
    if len(good) == len(events):
        return events, []
    return good, [f"event larger than {MAX_EVENT_BYTES} bytes"] * (len(events) - len(good))


def _identity(peer: _Peer) -> dict[str, Any]:
    h = peer.hello
    return {
        "app_id": h.app_id,
        "app_name": h.app_name,
        "org": h.org,
        "space": h.space,
        "instance": h.instance,
    }


def _identity_filler(peer: _Peer) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The per-event path's version of ChannelServer._stamp."""
    ident = _identity(peer)

    def fill(event: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(event, dict):
            raise TypeError("event is not an object")
        out = dict(event)
        out["defender_id"] = peer.defender_id
        for k, v in ident.items():
            if peer.bound or not out.get(k):
                out[k] = v
        return out

    return fill
