"""DNS for a container, steered to the cell defender's resolver.

The app-embedded defender's resolver proxy (garrison.defender.net.dns_proxy), one per container, its
listening sockets made inside the container's network namespace (127.0.0.1:P there); our nftables
table redirects every UDP/TCP packet to port 53 to it (see network.ruleset). Names are decided by the
shared evaluator (denied → NXDOMAIN under prevent), allowed ones are forwarded from the cell's own
namespace to the upstream resolvers, and the addresses allowed names resolved to are pinned into the
table's `pinned4`/`pinned6` sets before the answer reaches the app, so a DNS allow-list also limits
connects to them (as the app-embedded defender's pin table does)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from garrison.cell import network
from garrison.defender.net.dns_proxy import AuditFn, DnsProxy, PinTable, Upstream
from garrison.kernel.netns import socket_in_netns
from garrison.policy.evaluate import dns_name_allowed
from garrison.policy.model import Rule

log = logging.getLogger("garrison.cell.dns")


class NftPins(PinTable):
    """The proxy's pin table that also adds allowed names' addresses to the container's nft sets."""

    def __init__(self, pid: int, rule: Callable[[], Rule | None]) -> None:
        super().__init__()
        self.pid = pid
        self._rule_of = rule

    def add(self, ip: str, name: str, ttl: float) -> None:
        super().add(ip, name, ttl)
        rule = self._rule_of()
        if rule is None or not rule.dns.allow or not dns_name_allowed(rule, name):
            return
        family = "pinned4" if ipaddress.ip_address(ip).version == 4 else "pinned6"
        timeout = int(max(ttl, self._min_ttl))
        try:
            network.apply(self.pid, f"add element inet {network.TABLE} {family} {{ {ip} timeout {timeout}s }}\n")
        except RuntimeError as exc:  # the table was replaced meanwhile without a DNS allow-list
            log.debug("pin %s for %s: %s", ip, name, exc)


class ContainerResolver:
    def __init__(self, pid: int, rule: Callable[[], Rule | None], audit: AuditFn, upstreams: list[Upstream],
                 on_query: Callable[[str, Upstream], None] | None = None) -> None:
        """`on_query`: every name asked (learning)."""
        netns = f"/proc/{pid}/ns/net"
        self.pins = NftPins(pid, rule)
        self.proxy = DnsProxy(rule, audit, self.pins, upstreams, host="127.0.0.1", on_query=on_query,
                              listen_socket=lambda fam, kind: socket_in_netns(netns, fam, kind))
        self.port = self.proxy.start()[1]

    def stop(self) -> None:
        self.proxy.stop()


def parse_upstream(text: str) -> Upstream:
    """`host` or `host:port` or `[v6]:port`."""
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest.lstrip(":") or 53)
    elif text.count(":") == 1:
        host, p = text.split(":")
        port = int(p)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return host, port
