"""Everything a running console holds: config, store, CA, services, channel; shared by API and server."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING

from garrison.channel.bundle import ws_addresses_from_env
from garrison.console.metrics import ConsoleMetrics
from garrison.console.services.alerts import AlertDispatcher
from garrison.console.services.audits import AuditService
from garrison.console.services.auth import AuthService
from garrison.console.services.client_address import Network, trusted_proxies_from_env
from garrison.console.services.defenders import DefenderService
from garrison.console.services.discovery import DiscoveryService
from garrison.console.services.hosts import HostService
from garrison.console.services.learning import LearningService
from garrison.console.services.live import LiveHub
from garrison.console.services.policies import PolicyService
from garrison.console.services.scans import ScanService
from garrison.console.services.throttle import LoginThrottle, policy_from_env
from garrison.console.store.open import Store
from garrison.pki import CertificateAuthority

if TYPE_CHECKING:
    from garrison.channel.server import ChannelServer
    from garrison.console.services.cluster import ClusterService


@dataclass
class ConsoleContext:
    data_dir: Path
    store: Store
    ca: CertificateAuthority
    metrics: ConsoleMetrics
    auth: AuthService
    policies: PolicyService
    defenders: DefenderService
    audits: AuditService
    alerts: AlertDispatcher
    scans: ScanService
    hosts: HostService
    console_url: str = ""
    ws_address: str = ""
    channel: ChannelServer | None = None
    blobstore: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)
    public: frozenset[str] = frozenset()
    """what may be read without a token: "metrics" (--public-metrics), "docs" (--public-api-docs)"""
    live: LiveHub = field(default_factory=LiveHub)
    cluster: ClusterService | None = None
    """this console as a replica: leases, change listener, commands routed to other replicas"""
    ws_fallbacks: tuple[str, ...] = ()
    """GARRISON_CONSOLE_WS_ADDRESSES: console addresses every install bundle lists for fail-over"""
    trusted_proxies: tuple[Network, ...] = ()
    """GARRISON_TRUSTED_PROXIES: peers whose X-Forwarded-For is believed (login throttling)"""
    single_lock: IO[str] | None = None
    """SQLite: the lock file held while this console serves the database (one console per file)"""

    @cached_property
    def learning(self) -> LearningService:
        return LearningService(self.store, self.policies)

    @cached_property
    def discovery(self) -> DiscoveryService:
        return DiscoveryService(self.store, self.learning)

    @classmethod
    def build(cls, data_dir: Path, store: Store, ca: CertificateAuthority) -> ConsoleContext:
        metrics = ConsoleMetrics()
        policies = PolicyService(store)
        return cls(
            data_dir=data_dir,
            store=store,
            ca=ca,
            metrics=metrics,
            auth=AuthService(
                store,
                throttle=LoginThrottle(
                    store.throttle, policy_from_env(os.environ.get("GARRISON_LOGIN_THROTTLE"))
                ),
                on_login_event=lambda kind: metrics.logins.labels(kind).inc(),
            ),
            policies=policies,
            scans=ScanService(store, policies),
            hosts=HostService(store),
            defenders=DefenderService(store, ca),
            audits=AuditService(store),
            alerts=AlertDispatcher(on_drop=lambda name: metrics.alerts_dropped.labels(name).inc()),
            trusted_proxies=trusted_proxies_from_env(os.environ.get("GARRISON_TRUSTED_PROXIES")),
            ws_fallbacks=ws_addresses_from_env(os.environ.get("GARRISON_CONSOLE_WS_ADDRESSES")),
        )
