"""Prometheus metrics of one console process (own registry: several consoles can share a test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class ConsoleMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_ingested = Counter(
            "garrison_events_ingested", "New runtime audit events stored", registry=self.registry
        )
        self.http_requests = Counter(
            "garrison_http_requests", "API requests by status class", ["status"], registry=self.registry
        )
        self.alerts_dropped = Counter(
            "garrison_alerts_dropped", "Alerts not delivered (queue full or output failed)", ["output"],
            registry=self.registry,
        )  # fmt: skip
        self.defenders_connected = Gauge(
            "garrison_defenders_connected", "Defenders connected to this console", registry=self.registry
        )
        self.logins = Counter(
            "garrison_login_failures",
            "Refused logins: failed (wrong credentials), throttled (back-off/lockout), lockout (started)",
            ["kind"],
            registry=self.registry,
        )
        self.policy_revision = Gauge(
            "garrison_policy_revision", "Current runtime policy revision", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
