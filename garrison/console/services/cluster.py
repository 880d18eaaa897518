"""This console as one replica among several on one PostgreSQL database.

- **Changes** reach every replica through `LISTEN garrison_changes`: a notification only wakes the
  listener, which reads the per-topic versions (`cluster_versions`) and runs the handler of each topic
  that moved. The listener reconnects with back-off after any failure and catches up by comparing
  versions right after its `LISTEN`, so nothing committed while it was away is missed; a version
  read every `SAFETY_CHECK_S` is the backstop, not the way changes travel.
- **Lease**: the replica's row in `console_replicas` is renewed every `lease/3` s on the database's
  clock. Every replica also reaps: the defenders of a replica whose lease expired (crashed, killed,
  partitioned) are marked disconnected — unless they already reconnected to a live replica, which
  then holds them (`defenders.replica_id`). A replica that finds its own lease gone (it stalled
  longer than the lease) registers again and re-asserts the defenders it still holds.
- **Audits**: a replica that stored audits sends `NOTIFY garrison_audits` (at most every
  `AUDIT_NOTIFY_GAP_S`, after the commit); the others' listeners wake their web UI live streams
  (`on_audits`), which read the new rows from the store. Nothing to catch up: a stream also reads
  every `live.BACKSTOP_S`, so a notification lost while the listener reconnects only delays it.
- **Commands** (forensics uploads) for a defender held by another replica go through
  `cluster_commands`: the holder claims, runs and answers them; the asker waits for the answer.

On SQLite (one console by design) the same service runs without a listener: the replica row and
`defenders.replica_id` are kept so the API answers alike, and changes are already local.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from garrison.channel import protocol as p
from garrison.channel.server import DefenderNotConnected
from garrison.console.store.cluster import AUDITS_CHANNEL, NOTIFY_CHANNEL, TOPICS
from garrison.console.store.open import Store

log = logging.getLogger("garrison.console.cluster")

DEFAULT_LEASE_S = 30.0
SAFETY_CHECK_S = 30.0
RECONNECT_MAX_S = 10.0
AUDIT_NOTIFY_GAP_S = 0.2
Handler = Callable[[], Awaitable[None]]


def lease_from_env() -> float:
    raw = os.environ.get("GARRISON_REPLICA_LEASE", "")
    if not raw:
        return DEFAULT_LEASE_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"GARRISON_REPLICA_LEASE={raw!r} is not a number of seconds") from None
    if not 1.0 <= value <= 3600.0:
        raise ValueError("GARRISON_REPLICA_LEASE must be between 1 and 3600 seconds")
    return value


def new_replica_id() -> str:
    host = socket.gethostname().split(".")[0][:32] or "console"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class ClusterService:
    def __init__(self, store: Store, replica_id: str | None = None, *, lease_s: float | None = None) -> None:
        self.store = store
        self.replica_id = replica_id or new_replica_id()
        self.lease_s = lease_s if lease_s is not None else lease_from_env()
        self.handlers: dict[str, Handler] = {}
        self.listening = False
        """the LISTEN connection is up (exported in /metrics)"""
        self.listener_reconnects = 0
        self._seen: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()
        """routed commands being run here"""
        self._command_waiters: set[asyncio.Event] = set()
        self._catch_up_lock = asyncio.Lock()
        self._held: Callable[[], list[str]] = list
        self.on_audits: Callable[[], None] = lambda: None
        """called (on the loop) when another replica stored audits"""
        self._audit_notice: asyncio.Task[None] | None = None
        self._audits_pending = False

    @property
    def shared(self) -> bool:
        """Several replicas may share this database (PostgreSQL)."""
        return self.store.dialect == "postgresql"

    def on(self, topic: str, handler: Handler) -> None:
        if topic not in TOPICS:
            raise ValueError(f"unknown cluster topic {topic!r}")
        self.handlers[topic] = handler

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, *, url: str, ws_address: str, held: Callable[[], list[str]]) -> None:
        """Register this replica and start the lease keeper (and, on PostgreSQL, the listener).
        `held()` lists the defenders whose connections this replica holds."""
        self._held = held
        self._seen = await asyncio.to_thread(self.store.cluster.versions)
        await asyncio.to_thread(
            self.store.cluster.register,
            self.replica_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            url=url,
            ws_address=ws_address,
        )
        self._tasks.append(asyncio.create_task(self._keep_lease()))
        if self.shared:
            self._tasks.append(asyncio.create_task(self._listen()))
        log.info("console replica %s (lease %.0f s)", self.replica_id, self.lease_s)

    async def stop(self) -> None:
        """Stop the tasks and hand this replica's defenders back at once (clean shutdown)."""
        tasks = [*self._tasks, *self._running, *([self._audit_notice] if self._audit_notice else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        try:
            await asyncio.to_thread(self.store.cluster.release, self.replica_id)
        except Exception:
            log.warning("could not release replica %s; its lease will expire", self.replica_id, exc_info=True)

    # -- lease -------------------------------------------------------------------------------
    async def _keep_lease(self) -> None:
        interval = self.lease_s / 3
        reachable_since: float | None = None
        while True:
            try:
                if not await asyncio.to_thread(self.store.cluster.heartbeat, self.replica_id):
                    log.warning("replica %s lost its lease (stalled?): registering again", self.replica_id)
                    await asyncio.to_thread(
                        self.store.cluster.register,
                        self.replica_id,
                        hostname=socket.gethostname(),
                        pid=os.getpid(),
                        url="",
                        ws_address="",
                    )
                    await asyncio.to_thread(self.store.cluster.reassert, self.replica_id, self._held())
                now = time.monotonic()
                reachable_since = reachable_since or now
                # After the database was unreachable (a restart, a failover) every replica's lease
                # looks expired: give the others one lease to renew theirs before reaping anyone.
                if now - reachable_since >= self.lease_s:
                    marked = await asyncio.to_thread(self.store.cluster.reap, self.lease_s)
                    if marked:
                        log.info("marked %d defenders of expired replicas disconnected", marked)
                if not self.shared:
                    await self.catch_up()  # SQLite: no notifications; local changes already acted on
            except Exception:
                reachable_since = None
                log.warning("replica lease upkeep failed; retrying", exc_info=True)
            await asyncio.sleep(interval)

    # -- change propagation ------------------------------------------------------------------
    def _listen_dsn(self) -> str:
        url = self.store.engine.url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    async def _listen(self) -> None:
        import psycopg

        attempt = 0
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._listen_dsn(),
                    autocommit=True,
                    application_name=f"garrison-listener {self.replica_id}"[:63],
                    connect_timeout=10,
                    keepalives=1,
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=3,
                )
                async with conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    await conn.execute(f"LISTEN {AUDITS_CHANNEL}")
                    self.listening = True
                    attempt = 0
                    await self.catch_up()  # whatever changed before LISTEN took effect
                    self.on_audits()  # and audits stored meanwhile
                    while True:
                        audits_only = False
                        async for n in conn.notifies(timeout=SAFETY_CHECK_S, stop_after=1):
                            audits_only = n.channel == AUDITS_CHANNEL
                            if audits_only:
                                self.on_audits()
                        if audits_only:
                            continue
                        await conn.execute("SELECT 1")  # a dead connection fails here, not silently
                        await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.listening:
                    log.warning("change listener lost its connection (%s); reconnecting", exc)
                self.listening = False
                self.listener_reconnects += 1
                attempt += 1
                await asyncio.sleep(min(RECONNECT_MAX_S, 0.2 * 2**attempt))
            finally:
                self.listening = False

    def audits_stored(self) -> None:
        """This replica stored audits (called on the loop after the commit): notify the others,
        at most every AUDIT_NOTIFY_GAP_S however busy ingest is."""
        if not self.shared:
            return
        self._audits_pending = True
        if self._audit_notice is None or self._audit_notice.done():
            self._audit_notice = asyncio.get_running_loop().create_task(self._announce_audits())

    async def _announce_audits(self) -> None:
        while self._audits_pending:
            self._audits_pending = False
            try:
                await asyncio.to_thread(self.store.cluster.announce_audits)
            except Exception as exc:  # the other streams' backstop read still shows them
                log.info("could not announce new audits to the other replicas: %s", exc)
            await asyncio.sleep(AUDIT_NOTIFY_GAP_S)

    async def catch_up(self) -> None:
        """Run the handler of every topic whose version moved since it last ran successfully."""
        async with self._catch_up_lock:
            versions = await asyncio.to_thread(self.store.cluster.versions)
            for topic, version in versions.items():
                if self._seen.get(topic) == version:
                    continue
                handler = self.handlers.get(topic)
                try:
                    if handler is not None:
                        await handler()
                except Exception:
                    log.exception("acting on a %s change failed; will retry", topic)
                    continue
                self._seen[topic] = version
            if self._command_waiters:
                for ev in self._command_waiters:
                    ev.set()

    # -- commands for defenders held elsewhere -----------------------------------------------
    async def remote_command(
        self, defender_id: str, name: str, args: dict[str, Any], *, timeout: float
    ) -> p.CommandResult:
        """Ask the replica holding `defender_id` to run a command; DefenderNotConnected when no live
        replica holds it, TimeoutError when no answer comes within `timeout`."""
        holder = await asyncio.to_thread(self.store.cluster.holder, defender_id, self.lease_s)
        if holder is None or holder == self.replica_id or not self.shared:
            raise DefenderNotConnected(defender_id)
        cid = uuid.uuid4().hex
        wake = asyncio.Event()
        self._command_waiters.add(wake)
        deadline = time.monotonic() + timeout
        try:
            await asyncio.to_thread(self.store.cluster.submit_command, cid, defender_id, holder, name, args)
            while True:
                row = await asyncio.to_thread(self.store.cluster.command, cid)
                if row is not None and row["state"] == "done":
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no answer from replica {holder}")
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), min(left, 5.0))
        finally:
            self._command_waiters.discard(wake)
        await asyncio.to_thread(self.store.cluster.drop_command, cid)
        if not row["ok"] and row["error"] in ("not_connected", "replica_gone"):
            raise DefenderNotConnected(defender_id)
        if not row["ok"] and row["error"] == "timeout":
            raise TimeoutError(f"defender {defender_id} did not answer")
        return p.CommandResult(id=cid[:64], ok=bool(row["ok"]), data=row["data"], error=row["error"] or "")

    async def run_claimed_commands(
        self, send: Callable[[str, str, dict[str, Any]], Awaitable[p.CommandResult]]
    ) -> None:
        """Handler of the `commands` topic: run the commands other replicas routed to us."""
        for cmd in await asyncio.to_thread(self.store.cluster.claim_commands, self.replica_id):
            task = asyncio.create_task(self._run_one(cmd, send))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run_one(
        self, cmd: dict[str, Any], send: Callable[[str, str, dict[str, Any]], Awaitable[p.CommandResult]]
    ) -> None:
        ok, data, error = False, None, ""
        try:
            result = await send(cmd["defender_id"], cmd["name"], dict(cmd["args"] or {}))
            ok, data, error = result.ok, result.data, result.error
        except DefenderNotConnected:
            error = "not_connected"
        except TimeoutError:
            error = "timeout"
        except Exception as exc:
            log.exception("routed command %s failed", cmd["id"])
            error = f"failed on replica {self.replica_id}: {exc}"
        await asyncio.to_thread(self.store.cluster.finish_command, cmd["id"], ok=ok, data=data, error=error)
