"""Prometheus metrics of one console process (own registry: several consoles can share a test process)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily

if TYPE_CHECKING:
    from garrison.console.connections import HttpsConnectionStats
    from garrison.console.services.cluster import ClusterService


class _CounterView:
    """A labelled counter whose values live elsewhere (read at scrape time)."""

    def __init__(self, name: str, doc: str, read: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        self.name, self.doc, self.read = name, doc, read

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.doc, labels=["listener", "reason"])
        for listener, reason, value in self.read():
            family.add_metric([listener, reason], value)
        yield family


class _ReasonCounter:
    """A counter by `reason` whose values live in a Counter elsewhere (read at scrape time)."""

    def __init__(self, name: str, doc: str, values: Mapping[str, int]) -> None:
        self.name, self.doc, self.values = name, doc, values

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.doc, labels=["reason"])
        for reason, value in sorted(self.values.items()):
            family.add_metric([reason], value)
        yield family


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
        self.resident_bytes = Gauge(
            "garrison_process_resident_bytes", "Resident set size (RSS) of the console process",
            registry=self.registry,
        )  # fmt: skip
        self.policy_revision = Gauge(
            "garrison_policy_revision", "Current runtime policy revision", registry=self.registry
        )

    def watch_connections(self, channel_refused: Mapping[str, int], https: HttpsConnectionStats) -> None:
        """Descriptors and refused connections, read at scrape time."""
        from garrison.console.connections import fd_limit, fd_reserve, open_fds

        Gauge(
            "garrison_open_fds", "File descriptors open in the console process", registry=self.registry
        ).set_function(open_fds)
        Gauge(
            "garrison_fd_limit", "Soft RLIMIT_NOFILE of the console process", registry=self.registry
        ).set_function(fd_limit)
        Gauge(
            "garrison_fd_reserve",
            "Descriptors kept for the store: defenders are refused (503) when open_fds reaches limit - reserve",
            registry=self.registry,
        ).set_function(lambda: fd_reserve(fd_limit()))
        refused = _CounterView(
            "garrison_connections_refused",
            "Connections refused: defender channel (fd_limit) and HTTPS (per_address, header_timeout)",
            lambda: (
                [("channel", k, v) for k, v in channel_refused.items()]
                + [("https", k, v) for k, v in https.refused.items()]
            ),
        )
        self.registry.register(refused)
        Gauge("garrison_https_connections", "Open HTTPS connections", registry=self.registry).set_function(
            lambda: sum(https.per_address.values())
        )

    def watch_profiles(self, refused: Mapping[str, int]) -> None:
        """Learning reports refused by the channel, read at scrape time."""
        self.registry.register(_ReasonCounter(
            "garrison_profile_reports_refused",
            "Learning reports refused: rate and bytes (a defender's per-minute budget), size (one message over "
            "its limit), workload (a cell's report for a workload it never reported)",
            refused,
        ))  # fmt: skip

    def watch_cluster(self, cluster: ClusterService) -> None:
        """The change listener's state, read at scrape time."""
        Gauge(
            "garrison_cluster_listening",
            "1 while this replica's change listener (PostgreSQL LISTEN) is connected",
            registry=self.registry,
        ).set_function(lambda: 1 if cluster.listening else 0)
        Gauge(
            "garrison_cluster_listener_reconnects",
            "Times the change listener lost its database connection (or failed to connect) since start",
            registry=self.registry,
        ).set_function(lambda: cluster.listener_reconnects)

    def watch_throttle(self, count: Callable[[], int]) -> None:
        """Rows of the shared login throttle (every replica's), read at scrape time."""

        def rows() -> float:
            try:
                return float(count())
            except Exception:  # the database is away: say "unknown", not a failed scrape
                return float("nan")

        Gauge(
            "garrison_login_throttle_keys",
            "User names and source addresses with recent failed logins, shared by every replica "
            "(bounded: GARRISON_LOGIN_THROTTLE max_keys)",
            registry=self.registry,
        ).set_function(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)
