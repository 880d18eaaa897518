"""Reference client of the defender channel, used by the defender and by tests/benches.

One asyncio coroutine (`run`) does everything: enrol once, connect with the defender certificate,
send `hello`, apply policy snapshots/pushes, stream the on-disk event spool in sequence-numbered
batches (several in flight, deleted only when acked), send heartbeats, answer commands, and reconnect
with jittered exponential backoff. A bundle may list several console replicas (`ws_fallbacks`): each
failed attempt or lost connection moves to the next address, so a replica's death moves its
defenders to the others without a load balancer; the spool is re-sent from its first unacknowledged
event and the console deduplicates per (defender, event id), so nothing is lost or stored twice. The defender's supervisor is threaded, so `start()`/`stop()` run
that coroutine on a private event loop in a background thread and `submit()` is thread-safe;
simulations run many clients on one loop with `await client.run()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus

from garrison.channel import protocol as p
from garrison.channel.bundle import InstallBundle
from garrison.channel.credentials import (
    CERT_FILE,
    KEY_FILE,
    Credentials,
    ca_fingerprint,
    forget_credentials,
    issued_by,
    issuer_name,
    load_credentials,
    save_credentials,
)
from garrison.channel.policy_cache import CACHE_FILE, load_cached_policy, save_cached_policy
from garrison.channel.spool import EventSpool
from garrison.pki.ca import client_ssl_context, make_key_and_csr
from garrison.policy.audit import AuditEvent
from garrison.policy.model import RuntimePolicy

log = logging.getLogger("garrison.channel.client")

SPOOL_FILE = "event-spool.sqlite"
PolicyCallback = Callable[[int, RuntimePolicy], None]
CommandCallback = Callable[[str, dict[str, Any]], Any]
"""(name, args) → JSON-able data for the reply; raise to report failure. Runs in a worker thread."""

_NETWORK_ERRORS = (OSError, ConnectionClosed, InvalidHandshake, TimeoutError, ssl.SSLError)


MAX_BATCH_BYTES = 1024 * 1024
"""Far below the server's message limit, so a batch of big events is never refused as too large."""


def _cap_bytes(rows: list[tuple[int, str]], limit: int) -> list[tuple[int, str]]:
    total = 0
    for i, (_, body) in enumerate(rows):
        total += len(body) + 1
        if total > limit and i > 0:
            return rows[:i]
    return rows


_CERT_REJECTED = (
    "TLSV1_ALERT_UNKNOWN_CA",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_CERTIFICATE_REVOKED",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "TLSV1_ALERT_DECRYPT_ERROR",
)
"""TLS alerts a console sends when it does not accept the client certificate we presented."""


def _cert_rejected(exc: BaseException | None) -> bool:
    """With TLS 1.3 the alert arrives after the handshake, while reading the HTTP upgrade response:
    websockets then raises InvalidMessage caused by the SSLError, so the cause chain is searched."""
    for _ in range(5):
        if exc is None:
            return False
        if isinstance(exc, ssl.SSLError) and any(a in str(exc) for a in _CERT_REJECTED):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def set_aside_previous_console(data_folder: Path, files: Iterable[str]) -> Path | None:
    """Move another console's cached state (identity, policy, unsent events) out of the way, into a
    0700 `previous-console-<time>/` folder: never sent to or used with the current console, kept
    for the operator (events are evidence), never deleted silently."""
    present = [n for n in files if (data_folder / n).exists()]
    if not present:
        return None
    dest = data_folder / time.strftime("previous-console-%Y%m%dT%H%M%SZ", time.gmtime())
    dest = dest.with_name(f"{dest.name}-{secrets.token_hex(3)}")
    dest.mkdir(mode=0o700)
    for name in present:
        (data_folder / name).replace(dest / name)
    return dest


def _closed_before_response(exc: BaseException) -> bool:
    """The server closed the connection before any HTTP answer: how a TLS 1.3 client-certificate
    rejection looks through asyncio (the alert itself is not surfaced)."""
    return isinstance(exc, InvalidMessage) and isinstance(exc.__cause__, EOFError)


def _retry_after(exc: InvalidStatus) -> float:
    try:
        return max(0.0, float(exc.response.headers.get("Retry-After", "0")))
    except ValueError:
        return 0.0


class EnrolmentFailed(Exception):
    """The console refused the enrolment (bad/replayed token...): retrying soon will not help."""


class Revoked(Exception):
    """The console says this defender was removed by an operator."""


class DefenderChannelClient:
    def __init__(
        self,
        bundle: InstallBundle,
        data_folder: Path,
        hello: p.Hello,
        on_policy: PolicyCallback | None = None,
        on_command: CommandCallback | None = None,
        *,
        spool: EventSpool | None = None,
        cache_policy: bool = True,
        batch_size: int = 1000,
        window: int = 4,
        heartbeat_interval: float = 30.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        check_hostname: bool = True,
        proxy: str | Literal[True] | None = None,
        parser: Callable[[str | bytes], p.Message] = p.parse,
        defender_type: p.DefenderType = "app-embedded",
        on_connect: Callable[[], list[p.Workloads]] | None = None,
    ) -> None:
        """`proxy`: None = connect directly; True = honour HTTPS_PROXY/NO_PROXY; or a proxy URL.
        `parser` exists for simulations: many clients in one process may share parsed policies.
        `on_connect()` gives messages sent right after each policy snapshot (a cell defender's full
        workload list); `send_message()` queues more while connected (deltas)."""
        self.bundle = bundle
        self.addresses = bundle.ws_addresses
        self._address_at = 0
        self.data_folder = Path(data_folder)
        self.hello = hello
        self.on_policy = on_policy
        self.on_command = on_command
        self.console_ca = ca_fingerprint(bundle.ca_pem)
        """SHA-256 of the bundle's console CA: what cached credentials and policies are bound to"""
        self.identity_note = ""
        """set when the cached identity was another console's and was set aside (say it, audit it)"""
        creds = load_credentials(self.data_folder)
        self.identity_verified = creds is not None and issued_by(creds.cert_pem, bundle.ca_pem)
        """the cached certificate was issued by this bundle's console (so the data folder is its)"""
        if creds is not None and not self.identity_verified:
            self._discard_foreign_identity(creds, own_spool=spool is None)
            creds = None
        self.spool = spool if spool is not None else EventSpool(self.data_folder / SPOOL_FILE)
        self.cache_policy = cache_policy
        self.batch_size = max(1, min(batch_size, p.MAX_EVENTS_PER_BATCH))
        self.window = max(1, window)
        self.heartbeat_interval = heartbeat_interval
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.check_hostname = check_hostname
        self.parse = parser
        self.proxy = proxy
        self.defender_type: p.DefenderType = defender_type
        self.on_connect = on_connect
        self._extra: deque[p.Workloads] = deque(maxlen=10000)
        self._extra_wake: asyncio.Event | None = None

        self.policy: RuntimePolicy | None = None
        self.verdict: p.DropletVerdict | None = None
        """the console's assurance verdict for GARRISON_DROPLET_DIGEST (first snapshot only)"""
        self.last_error: str = ""
        self.revoked = False
        self.stats: dict[str, int] = {"sent": 0, "acked_batches": 0, "connects": 0, "enrolments": 0}
        self.connected_event = threading.Event()
        self.policy_event = threading.Event()
        self._creds: Credentials | None = creds
        self._ctx_cache: tuple[Credentials, ssl.SSLContext] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._ws: ClientConnection | None = None
        self._closed_with_cert = 0

    def _discard_foreign_identity(self, creds: Credentials, *, own_spool: bool) -> None:
        """The cached certificate was not issued by the current bundle's CA: another console's identity.
        Its key is never reused (a fresh key is made at enrolment), its policy is not this console's,
        its unsent events were meant for the other console: all set aside."""
        files = [KEY_FILE, CERT_FILE, CACHE_FILE]
        if own_spool:
            files += [SPOOL_FILE, SPOOL_FILE + "-wal", SPOOL_FILE + "-shm", SPOOL_FILE + "-journal"]
        moved = set_aside_previous_console(self.data_folder, files)
        self.identity_note = (
            f"cached identity {creds.defender_id!r} in {self.data_folder} was issued by another console "
            f"({issuer_name(creds.cert_pem)}), not by this install bundle's console (CA sha256 "
            f"{self.console_ca[:16]}…): set aside in {moved} (key, certificate, cached policy, unsent "
            "events), enrolling again with a new key"
        )
        log.warning("%s", self.identity_note)

    # -- public, thread-safe -------------------------------------------------------------------
    @property
    def defender_id(self) -> str:
        return self._creds.defender_id if self._creds else ""

    @property
    def connected(self) -> bool:
        return self.connected_event.is_set()

    def submit(self, event: AuditEvent) -> int:
        """Spool an event durably (callable from any thread); it is sent as soon as possible."""
        return self.submit_many([event])

    def submit_many(self, events: Iterable[AuditEvent]) -> int:
        seq = self.spool.append(events)
        self.wake()  # if the loop is gone, the spool keeps the events for the next start
        return seq

    def send_now(self, msg: p._Msg, timeout: float = 10.0) -> bool:
        """Send one message on the live connection, from any thread; False when there is none or the
        send failed (nothing is spooled: for messages whose loss the next one heals, e.g. profiles)."""
        loop, ws = self._loop, self._ws
        if loop is None or ws is None or not self.connected_event.is_set():
            return False
        try:
            asyncio.run_coroutine_threadsafe(ws.send(p.dump(msg)), loop).result(timeout)
        except Exception:
            return False
        return True

    def wake(self) -> None:
        """Make the sender look at the spool now (after events were appended to it directly)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    def send_message(self, msg: p.Workloads) -> None:
        """Send a message soon, in order, if connected (thread-safe). Messages queued while
        disconnected are dropped at the next connection: `on_connect` sends the whole state then."""
        self._extra.append(msg)
        loop, wake = self._loop, self._extra_wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    def unreachable_reason(self) -> str:
        """Why there is no policy from the console yet (its last error; another console's identity
        set aside, if any)."""
        why = self.last_error or "no answer"
        if self.identity_note and self.identity_note not in why:
            why = f"{why}; {self.identity_note}"
        return why

    def cached_policy(self) -> RuntimePolicy | None:
        """The policy this console last sent, cached in the data folder (None if none; PolicyCacheError,
        or ForeignPolicyCache when it is another console's)."""
        return load_cached_policy(self.data_folder, console_ca=self.console_ca,
                                  accept_unbound=self.identity_verified)

    def wait_policy(self, timeout: float | None = None) -> bool:
        return self.policy_event.wait(timeout)

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self.connected_event.wait(timeout)

    def wait_delivered(self, timeout: float = 30.0) -> bool:
        """Block until the spool is empty (everything acked) or the timeout passes."""
        deadline = time.monotonic() + timeout
        while self.spool.pending():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def start(self) -> None:
        """Run the client on its own event loop in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("client already started")
        ready = threading.Event()

        def main() -> None:
            async def runner() -> None:
                self._bind_loop()
                ready.set()
                await self.run()

            asyncio.run(runner())

        self._thread = threading.Thread(target=main, name="garrison-channel", daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self, timeout: float = 10.0, *, flush_timeout: float = 5.0) -> None:
        """Stop the background thread; spooled events stay on disk for the next start.

        While connected, first give pending events up to `flush_timeout` s to be acked: in Cloud
        Foundry the container (and its data folder) usually goes away with the app."""
        if self._thread is not None and self.connected and flush_timeout > 0:
            self.wait_delivered(flush_timeout)
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.spool.close()

    # -- async API --------------------------------------------------------------------------
    def _bind_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._extra_wake = asyncio.Event()

    async def aclose(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def run(self) -> None:
        """Connect and keep connected until aclose()/stop(); never raises for network trouble."""
        if self._loop is None:
            self._bind_loop()
        assert self._stopping is not None
        attempt = 0
        while not self._stopping.is_set():
            delay_cap = self.backoff_max
            at_least = 0.0
            try:
                if self._creds is None:
                    await self.enrol()
                if await self._session():
                    attempt = 0
                    self._closed_with_cert = 0
            except EnrolmentFailed as exc:
                self.last_error = f"enrolment refused: {exc}"
                log.error("%s", self.last_error)
                attempt = max(attempt, 6)
            except Revoked as exc:
                self.revoked = True
                self.last_error = str(exc)
                log.error("console: %s", exc)
                attempt = max(attempt, 10)
            except InvalidStatus as exc:
                # 503 + Retry-After: the console is at its connection limit; come back when it says.
                at_least = min(_retry_after(exc), self.backoff_max * 4)
                self.last_error = f"console refused the connection: {exc}"
                log.info("%s", self.last_error)
            except _NETWORK_ERRORS as exc:
                if self._creds is not None and await self._certificate_refused(exc):
                    self._rejected(exc)
                else:
                    self.last_error = f"console unreachable: {exc!r}"
                    log.info("%s", self.last_error)
            finally:
                self.connected_event.clear()
                self._ws = None
            if self._stopping.is_set():
                break
            self._next_address()
            attempt += 1
            delay = random.uniform(0, min(delay_cap, self.backoff_base * 2**attempt))  # full jitter
            delay = max(delay, at_least * random.uniform(1.0, 1.5))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    @property
    def address(self) -> str:
        """The console address this client connects to now."""
        return self.addresses[self._address_at]

    def _next_address(self) -> None:
        if len(self.addresses) > 1:
            self._address_at = (self._address_at + 1) % len(self.addresses)
            log.info("next console address: %s", self.address)

    # -- enrolment ---------------------------------------------------------------------------
    def _connect(self, ctx: ssl.SSLContext) -> connect:
        return connect(
            self.address,
            ssl=ctx if self.address.startswith("wss:") else None,
            proxy=self.proxy,
            compression=None,
            max_size=p.MAX_MESSAGE_BYTES,
            open_timeout=15,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=5,
            user_agent_header=f"garrison-defender/{self.hello.version}",
        )

    async def enrol(self) -> None:
        """Enrol now (run() does this by itself when there is no certificate yet)."""
        key_pem, csr_pem = await asyncio.to_thread(make_key_and_csr, self.hello.defender_id or "defender")
        ctx = client_ssl_context(self.bundle.ca_pem.encode(), check_hostname=self.check_hostname)
        async with self._connect(ctx) as ws:
            await ws.send(
                p.dump(
                    p.Enrol(
                        token=self.bundle.enrolment_token,
                        nonce=secrets.token_hex(16),
                        timestamp=time.time(),
                        csr_pem=csr_pem.decode(),
                        requested_id=self.hello.defender_id,
                        defender_type=self.defender_type,
                        app=p.AppIdentity(
                            app_id=self.hello.app_id,
                            app_name=self.hello.app_name,
                            org=self.hello.org,
                            space=self.hello.space,
                            app_guid=self.hello.app_guid,
                            instance=self.hello.instance,
                        ),
                    )
                )
            )
            msg = p.parse(await asyncio.wait_for(ws.recv(), 30))
        if isinstance(msg, p.Error):
            raise EnrolmentFailed(msg.message)
        if not isinstance(msg, p.Enrolled):
            raise EnrolmentFailed(f"unexpected answer {msg.type!r} to enrolment")
        self._creds = save_credentials(self.data_folder, key_pem, msg.cert_pem.encode())
        self.stats["enrolments"] += 1
        log.info("enrolled as defender %s", self._creds.defender_id)

    async def _certificate_refused(self, exc: BaseException) -> bool:
        """Did the console refuse our certificate? Either the TLS alert says so (TLS 1.2), or (TLS 1.3)
        the console closed two connections in a row before answering while a connection without a
        certificate (the enrolment path) is answered: then it is the certificate it refuses."""
        if _cert_rejected(exc):
            return True
        if not _closed_before_response(exc):
            self._closed_with_cert = 0
            return False
        self._closed_with_cert += 1
        if self._closed_with_cert < 2:
            return False
        ctx = client_ssl_context(self.bundle.ca_pem.encode(), check_hostname=self.check_hostname)
        try:
            async with self._connect(ctx):
                pass
        except _NETWORK_ERRORS:
            return False
        self._closed_with_cert = 0
        return True

    def _rejected(self, exc: BaseException) -> None:
        """The console (authenticated by the bundle CA) refused our certificate during the handshake:
        it does not know this identity (its store was rebuilt, the certificate expired...). Enrolling
        again with a new key is the only way forward; the old key is never offered again."""
        old = self._creds.defender_id if self._creds else ""
        self.last_error = (
            f"the console rejected this defender's certificate ({exc}): identity {old!r} is not "
            "known to it; enrolling again with a new key"
        )
        log.warning("%s", self.last_error)
        self.identity_note = self.identity_note or self.last_error
        self.reset_enrolment()

    def reset_enrolment(self) -> None:
        """Forget the certificate so the next connection enrols again (e.g. the console was rebuilt)."""
        forget_credentials(self.data_folder)
        self._creds = None

    # -- session -----------------------------------------------------------------------------
    async def _session(self) -> bool:
        """One connection's life; True if it got as far as the policy snapshot."""
        creds = self._creds
        assert creds is not None and self._stopping is not None and self._wake is not None
        async with self._connect(self._session_context(creds)) as ws:
            self._ws = ws
            hello = self.hello.model_copy(
                update={
                    "defender_id": creds.defender_id,
                    "policy_revision": self.policy.revision if self.policy else None,
                }
            )
            await ws.send(p.dump(hello))
            first = self.parse(await asyncio.wait_for(ws.recv(), 30))
            if isinstance(first, p.Error):
                self._raise_for(first)
                raise ConnectionError(f"console refused the connection: {first.message}")
            if not isinstance(first, p.PolicySnapshot):
                raise ConnectionError(f"expected a policy snapshot, got {first.type!r}")
            self.stats["connects"] += 1
            self.last_error = ""
            await self._apply_policy(first)
            self._extra.clear()  # superseded by what on_connect sends now
            if self.on_connect is not None:
                for msg in self.on_connect():
                    await ws.send(p.dump(msg))
            self.connected_event.set()
            inflight: deque[int] = deque()
            tasks = [
                asyncio.create_task(self._reader(ws, inflight)),
                asyncio.create_task(self._sender(ws, inflight)),
                asyncio.create_task(self._extras(ws)),
                asyncio.create_task(self._heartbeats(ws)),
                asyncio.create_task(self._stopping.wait()),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for t in done:
                exc = t.exception()
                if exc is not None and not isinstance(exc, ConnectionClosed):
                    raise exc
        return True

    def _session_context(self, creds: Credentials) -> ssl.SSLContext:
        """Built once per certificate, not per reconnect: loading a key pair goes through temporary
        files, and thousands of simulated defenders reconnecting at once would spend their loop on
        it (and time each other's handshakes out)."""
        cached = self._ctx_cache
        if cached is None or cached[0] is not creds:
            ctx = client_ssl_context(
                self.bundle.ca_pem.encode(),
                cert_pem=creds.cert_pem,
                key_pem=creds.key_pem,
                check_hostname=self.check_hostname,
            )
            cached = self._ctx_cache = (creds, ctx)
        return cached[1]

    @staticmethod
    def _raise_for(err: p.Error) -> None:
        if err.code == "revoked":
            raise Revoked(err.message)
        if err.code == "enrolment_refused":
            raise EnrolmentFailed(err.message)

    async def _apply_policy(self, snap: p.PolicySnapshot) -> None:
        if snap.verdict is not None:
            self.verdict = snap.verdict
        policy = snap.policy
        if policy.revision != snap.revision:
            policy = policy.model_copy(update={"revision": snap.revision})
        self.policy = policy
        if self.cache_policy:
            try:  # in a thread: the fsync must not stall heartbeats and event sending
                await asyncio.to_thread(
                    save_cached_policy, self.data_folder, policy, console_ca=self.console_ca
                )
            except OSError as exc:
                log.warning("cannot cache the policy in %s: %s", self.data_folder, exc)
        if self.on_policy is not None:
            try:
                self.on_policy(snap.revision, policy)
            except Exception:
                log.exception("on_policy callback failed")
        self.policy_event.set()

    async def _reader(self, ws: ClientConnection, inflight: deque[int]) -> None:
        assert self._wake is not None
        async for raw in ws:
            try:
                msg = self.parse(raw)
            except p.ProtocolError as exc:
                log.warning("console sent a bad message: %s", exc)
                continue
            if isinstance(msg, p.Ack):
                self.spool.ack_through(msg.seq)
                while inflight and inflight[0] <= msg.seq:
                    inflight.popleft()
                self.stats["acked_batches"] += 1
                self._wake.set()
            elif isinstance(msg, p.PolicySnapshot):
                await self._apply_policy(msg)
            elif isinstance(msg, p.Command):
                task = asyncio.create_task(self._run_command(ws, msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(msg, p.Error):
                log.warning("console error %s: %s", msg.code, msg.message)
                if msg.fatal:
                    self._raise_for(msg)
                    self.last_error = f"console closed the connection: {msg.message}"
            else:
                log.warning("unexpected %r from the console", msg.type)

    async def _sender(self, ws: ClientConnection, inflight: deque[int]) -> None:
        """Stream the spool: up to `window` unacked batches in flight; restart from the oldest on reconnect."""
        assert self._wake is not None
        sent_through = 0
        while True:
            while len(inflight) < self.window:
                rows = self.spool.read_after(sent_through, self.batch_size)
                if not rows:
                    break
                rows = _cap_bytes(rows, MAX_BATCH_BYTES)
                seq = rows[-1][0]
                body = ",".join(b for _, b in rows)
                await ws.send(f'{{"v":{p.PROTOCOL_VERSION},"type":"events","seq":{seq},"events":[{body}]}}')
                inflight.append(seq)
                sent_through = seq
                self.stats["sent"] += len(rows)
            self._wake.clear()
            if len(inflight) < self.window and self.spool.read_after(sent_through, 1):
                continue
            await self._wake.wait()

    async def _extras(self, ws: ClientConnection) -> None:
        assert self._extra_wake is not None
        while True:
            self._extra_wake.clear()
            while self._extra:
                await ws.send(p.dump(self._extra.popleft()))
            await self._extra_wake.wait()

    async def _heartbeats(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            stats: dict[str, Any] = {
                "spooled": self.spool.pending(),
                "dropped": self.spool.dropped,
                "policy_revision": self.policy.revision if self.policy else None,
                **self.stats,
            }
            await ws.send(p.dump(p.Heartbeat(stats=stats)))

    async def _run_command(self, ws: ClientConnection, cmd: p.Command) -> None:
        if self.on_command is None:
            reply = p.CommandResult(id=cmd.id, ok=False, error=f"command {cmd.name!r} not supported")
        else:
            try:
                data = await asyncio.to_thread(self.on_command, cmd.name, cmd.args)
                reply = p.CommandResult(id=cmd.id, ok=True, data=data)
            except Exception as exc:
                reply = p.CommandResult(id=cmd.id, ok=False, error=f"{type(exc).__name__}: {exc}"[:4000])
        with contextlib.suppress(ConnectionClosed):
            await ws.send(p.dump(reply))
