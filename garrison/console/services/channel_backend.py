"""The console's implementation of garrison.channel.backend.ChannelBackend.

The channel server runs in the asyncio loop; the store is synchronous SQLAlchemy, so each call is
handed to a worker thread. New events also go to the alert dispatcher, which never blocks ingestion.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from garrison.channel.backend import DefenderHello
from garrison.channel.protocol import AppIdentity, DefenderType, ProfileRefused, ProfileReport, Workloads
from garrison.console.services.defenders import DefenderService
from garrison.console.services.group_commit import GroupCommit
from garrison.console.services.heartbeats import HeartbeatBuffer
from garrison.console.services.ingest import EventWriter
from garrison.console.services.learning import ANOMALY_CONTROLS, LearningService
from garrison.console.services.policies import PolicyService
from garrison.console.services.scans import ScanService
from garrison.console.store.open import Store
from garrison.policy.audit import AuditEvent
from garrison.policy.model import RuntimePolicy

log = logging.getLogger(__name__)


class ConsoleChannelBackend:
    def __init__(
        self,
        store: Store,
        defenders: DefenderService,
        policies: PolicyService,
        on_events: Callable[[list[AuditEvent]], None] | None = None,
        scans: ScanService | None = None,
        replica_id: str | None = None,
    ) -> None:
        """`replica_id`: this console replica, recorded as the holder of each connection."""
        self.replica_id = replica_id
        self.scans = scans
        self.store = store
        self.defenders = defenders
        self.policies = policies
        self.on_events = on_events
        self.writer = EventWriter(store)
        self.heartbeats = HeartbeatBuffer(store)
        # Connects and disconnects of a whole reconnecting fleet share transactions, in order.
        self.connections: GroupCommit[tuple[str, dict[str, Any] | None], dict[str, Any] | None] = GroupCommit(
            functools.partial(store.defenders.connection_changes, replica_id=replica_id), max_weight=2000
        )
        self.learning = LearningService(store, policies)

    async def enrol(
        self,
        token: str,
        nonce: str,
        timestamp: float,
        csr_pem: bytes,
        requested_id: str,
        identity: AppIdentity | None = None,
        defender_type: DefenderType = "app-embedded",
    ) -> tuple[str, bytes]:
        return await asyncio.to_thread(
            self.defenders.enrol, token, nonce, timestamp, csr_pem, requested_id, identity, defender_type
        )

    async def workloads(self, defender_id: str, msg: Workloads) -> str:
        return await asyncio.to_thread(self._workloads, defender_id, msg)

    def _workloads(self, defender_id: str, msg: Workloads) -> str:
        if self.store.defenders.defender_type(defender_id) != "cell":
            return "only cell defenders report workloads"
        up = [wl.model_dump() for wl in msg.up]
        self.store.workloads.apply(defender_id, up, msg.gone, full=msg.full)
        return ""

    async def defender_connected(self, hello: DefenderHello) -> AppIdentity:
        values: dict[str, Any] = {
            "app_id": hello.app_id[:256],
            "app_name": hello.app_name[:256],
            "org": hello.org[:256],
            "space": hello.space[:256],
            "app_guid": hello.app_guid[:256],
            "instance": hello.instance if 0 <= hello.instance < 2**31 else 0,
            "version": hello.version[:64],
            "hostname": hello.hostname[:256],
            "kernel": hello.kernel,
            "remote_addr": hello.remote_addr[:64],
        }
        bound = await self.connections.submit((hello.defender_id, values))
        assert bound is not None
        return AppIdentity.model_construct(**bound)

    async def defender_disconnected(self, defender_id: str) -> None:
        await self.connections.submit((defender_id, None))

    async def heartbeat(self, defender_id: str, stats: dict[str, Any]) -> None:
        self.heartbeats.record(defender_id, stats)  # written with the others within a second

    async def aclose(self) -> None:
        """After the channel stopped: write the heartbeats still buffered."""
        await self.heartbeats.aclose()

    async def current_policy(self) -> RuntimePolicy:
        return await asyncio.to_thread(self.policies.runtime)

    async def store_events(self, defender_id: str, events: Sequence[AuditEvent]) -> int:
        # The store records the authenticated defender id, whatever the events claim.
        new_ids = await self.writer.write(events, defender_id)
        fresh = list(events) if len(new_ids) == len(events) else [e for e in events if e.id in new_ids]
        if fresh and self.on_events is not None:
            self.on_events(fresh)
        anomalies = [e for e in fresh if e.control in ANOMALY_CONTROLS]
        if anomalies:
            try:
                await asyncio.to_thread(self.learning.ingest_anomalies, anomalies)
            except Exception:  # the audits are stored: a profile update must not fail the batch
                log.exception("recording anomalies in the profiles failed")
        return len(new_ids)

    async def store_profile(self, defender_id: str, identity: dict[str, Any], report: ProfileReport) -> int:
        """A learning report into its app's profile; returns how many items were new. ProfileRefused
        for a report whose workload this defender may not report for."""
        return await asyncio.to_thread(self._store_profile, defender_id, identity, report)

    def _store_profile(self, defender_id: str, identity: dict[str, Any], report: ProfileReport) -> int:
        return self.learning.ingest(defender_id, self._profile_identity(defender_id, identity, report), report)

    def _profile_identity(self, defender_id: str, bound: dict[str, Any], report: ProfileReport) -> dict[str, Any]:
        """Whose profile a report feeds: an app-embedded defender's own (bound) app; for a cell, the
        identity the cell reported for the named container (the report must agree with it)."""
        wl = report.workload
        if self.store.defenders.defender_type(defender_id) != "cell":
            if wl is not None:
                raise ProfileRefused("only cell defenders send profile reports for a workload")
            return bound
        if wl is None:
            raise ProfileRefused("a cell defender's profile report must name its workload (container)")
        row = self.store.workloads.get(defender_id, wl.container_id)
        if row is None:
            raise ProfileRefused(f"workload {wl.container_id!r} was never reported by this cell")
        fields = ("app_id", "app_name", "org", "space", "app_guid", "instance")
        claimed = wl.model_dump(include=set(fields))
        known = {k: row[k] for k in fields}
        if claimed != known:
            raise ProfileRefused(f"workload {wl.container_id!r} is {known['org']}/{known['space']}/"
                                 f"{known['app_name']}#{known['instance']} on this cell, not what the report says")
        return known

    async def droplet_verdict(self, digest: str, app_guid: str) -> dict[str, Any]:
        if self.scans is None:
            return {"digest": digest, "verdict": "unknown", "reasons": [], "effect": "alert"}
        return await asyncio.to_thread(self.scans.verdict, digest, app_guid)

    async def is_revoked(self, defender_id: str) -> bool:
        return await asyncio.to_thread(self.store.defenders.is_revoked, defender_id)
