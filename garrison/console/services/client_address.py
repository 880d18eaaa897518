"""The client address login throttling keys on: the TCP peer, or what a trusted proxy says.

X-Forwarded-For is written by whoever sends the request, so believing it lets an attacker give each
guess a fresh address. It is read only when the peer is one of the proxies the operator lists in
`GARRISON_TRUSTED_PROXIES` (comma-separated addresses or CIDRs, e.g. the gorouters' subnet), and
then walked from the right: the first address not itself a trusted proxy is the client (entries to
its left were written by the client and are ignored). With no trusted proxy (the default) the header
is ignored. `Forwarded` and `X-Real-IP` are never read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_proxies_from_env(text: str | None) -> tuple[Network, ...]:
    nets: list[Network] = []
    for part in (text or "").split(","):
        if part.strip():
            try:
                nets.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"GARRISON_TRUSTED_PROXIES: {part.strip()!r} is not an address or CIDR"
                ) from None
    return tuple(nets)


def _trusted(address: str, proxies: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_address(peer: str, forwarded_for: list[str], proxies: tuple[Network, ...]) -> str:
    """`forwarded_for`: every X-Forwarded-For header value, in order."""
    if not proxies or not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",")]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a garbled hop: the proxy's own address is the most we know
        if not _trusted(hop, proxies):
            return hop
    return peer
