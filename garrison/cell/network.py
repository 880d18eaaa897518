"""Outbound allow/deny and bad-reputation addresses for a container, enforced by nftables inside the
container's own network namespace (our own `inet garrison` table, separate from Garden's rules), with
every decision logged to an NFLOG group the cell defender reads back as audits.

nftables sees the packets the kernel actually sends, after routing: an IPv4-mapped or unspecified
destination has already become the IPv4 (loopback) address on the wire, so no address form escapes
a rule. Only new flows are checked (a TCP connection's SYN; other protocols per packet, or through
conntrack where the rule needs it anyway); the order is the evaluator's: bad reputation, deny list,
allow list."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from collections.abc import Callable

from garrison.kernel import nftset
from garrison.policy.model import DnsControls, NetTarget, NetworkControls, PortRange

NFLOG_GROUP = 7341
TABLE = "garrison"
LEARN_SETS = (("ip", "learned4", "ipv4_addr"), ("ip6", "learned6", "ipv6_addr"))
LEARN_SET_SIZE = 65536  # distinct destinations per family while learning (beyond: not counted)
_FULL = (0, 65535)


def _ports(ranges: list[PortRange]) -> str | None:
    spans = [(r.start, r.end) for r in ranges]
    if any(s == _FULL for s in spans):
        return None
    return "{ " + ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans) + " }"


def _match(t: NetTarget) -> list[str]:
    """nft match expressions for one target ([] of them when it would match nothing: a v6 target on
    an empty port list cannot happen, validation forbids it)."""
    parts = []
    if t.cidr != "*":
        net = ipaddress.ip_network(t.cidr, strict=False)
        parts.append(f"{'ip' if net.version == 4 else 'ip6'} daddr {net}")
    ports = _ports(t.ports)
    if ports and t.protocol in ("tcp", "udp"):
        parts.append(f"{t.protocol} dport {ports}")
    elif ports:
        parts.append(f"meta l4proto {{ tcp, udp }} th dport {ports}")
    elif t.protocol != "any":
        parts.append(f"meta l4proto {t.protocol}")
    return parts


NEW_OUTBOUND_TCP = "tcp flags & (syn | ack) != syn accept"
"""Without conntrack, only the first packet of a new outbound TCP connection (a SYN without ACK)
goes past this line: every other TCP packet leaves after one comparison."""
ESTABLISHED = "ct state established,related accept"
FLOW_WINDOW_S = 10


def needs_conntrack(net: NetworkControls, dns_port: int | None) -> bool:
    """Conntrack is loaded into the container's namespace only when a rule cannot do without it: DNS
    steering (NAT redirect) and refusing inbound flows to listening ports (an inbound UDP packet is a
    reply to the app's own query or a new flow only conntrack can tell). Tracking every connection
    costs each connect more than all our rules together, so outbound rules and flow logging are
    stateless: TCP is checked on its SYN, other protocols per packet."""
    return dns_port is not None or bool(_inbound(net, dns_port, lambda _c, _i: ""))


def ruleset(net: NetworkControls, *, log_flows: bool = False, dns: DnsControls | None = None,
            dns_port: int | None = None, count_flows: bool = False) -> str:
    """The whole `inet garrison` table for one container, replaced atomically by `nft -f`
    (`log_flows`: each new destination is logged too, for forensics; `count_flows`: every new flow,
    through conntrack, counted per destination in the kernel for learning: `learned_flows`). With `dns_port`, every UDP/TCP
    packet to port 53 is redirected to the defender's resolver listening on 127.0.0.1:`dns_port` in
    the container; with a DNS allow-list too, new flows go only to addresses allowed names resolved
    to (`pinned4`/`pinned6`, filled by the resolver), to the outbound allow list, or to loopback.

    Layout (chains to extend rather than rules to insert): `output` = the new-flow filter (SYN-only
    without conntrack, `ct state` with it), then `watch` (logging only, never a verdict: port-scan and
    forensic flow logs), then the decisions in the evaluator's order (scan block, bad reputation,
    deny list, allow list, DNS pins), each refusal through `refuse`."""
    net_on = net.effect != "disable"
    pin = dns is not None and dns_port is not None and dns.effect != "disable" and bool(dns.allow)

    def logged(control: str, index: int, effect: str = net.effect) -> str:
        act = "goto refuse" if effect == "prevent" else "accept"
        return f'log prefix "g|{effect}|{control}|{index}" group {NFLOG_GROUP} {act}'

    lines = [
        f"table inet {TABLE} {{}}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
    ]
    bad = net.bad_reputation_ips if net_on else []
    bad4 = [n for n in bad if ipaddress.ip_network(n, strict=False).version == 4]
    bad6 = [n for n in bad if ipaddress.ip_network(n, strict=False).version == 6]
    for name, kind, items in (("badrep4", "ipv4_addr", bad4), ("badrep6", "ipv6_addr", bad6)):
        if items:
            lines.append(f"  set {name} {{ type {kind}; flags interval; auto-merge; elements = {{ "
                         + ", ".join(str(ipaddress.ip_network(i, strict=False)) for i in items) + " } }")
    scan = net_on and net.port_scan is not None and net.port_scan.enabled
    if scan:  # the defender fills it for a while once a scan is seen (prevent): new flows refused
        lines.append("  set scan_block { type inet_proto; flags timeout; }")
    stateful = needs_conntrack(net, dns_port) or count_flows
    watch_sets, watch = _watch(net, scan, log_flows and net_on, every=count_flows)
    lines += watch_sets
    if pin:
        lines += ["  set pinned4 { type ipv4_addr; flags timeout; }", "  set pinned6 { type ipv6_addr; flags timeout; }"]
    if dns_port is not None:
        lines += [
            "  chain dns {",
            "    type nat hook output priority -100; policy accept;",
            f"    udp dport 53 redirect to :{dns_port}",
            f"    tcp dport 53 redirect to :{dns_port}",
            "  }",
        ]
    lines += [
        "  chain refuse {",
        "    meta l4proto tcp reject with tcp reset",
        "    reject with icmpx type admin-prohibited",
        "  }",
        *watch,
        "  chain output {",
        "    type filter hook output priority 0; policy accept;",
        f"    {ESTABLISHED if stateful else NEW_OUTBOUND_TCP}",
    ]
    lines += _to_resolver(dns_port)
    if watch:
        lines.append("    jump watch")
    if scan and net.effect == "prevent":
        lines.append(f"    meta l4proto @scan_block {logged('network.port_scan', 1)}")
    if bad4:
        lines.append(f"    ip daddr @badrep4 {logged('network.bad_reputation', 0)}")
    if bad6:
        lines.append(f"    ip6 daddr @badrep6 {logged('network.bad_reputation', 0)}")
    for i, t in enumerate(net.outbound.deny if net_on else []):
        lines.append(f"    {' '.join(_match(t))} {logged('network.outbound.deny', i)}")
    allowed = [f"    {' '.join(_match(t))} accept" for t in net.outbound.allow]
    pinned = ["    ip daddr @pinned4 accept", "    ip6 daddr @pinned6 accept"] if pin else []
    if net_on and net.outbound.allow:
        lines += allowed + pinned  # an allowed name's address passes the allow list (as in decide_connect)
        lines.append(f"    meta l4proto {{ tcp, udp }} {logged('network.outbound.allow', -1)}")
    if pin:
        assert dns is not None
        lines += ["    ip daddr 127.0.0.0/8 accept", "    ip6 daddr ::1 accept", *allowed, *pinned,
                  f"    meta l4proto {{ tcp, udp }} {logged('dns.allow', -1, dns.effect)}"]
    lines.append("  }")
    lines += _inbound(net, dns_port, logged)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _watch(net: NetworkControls, scan: bool, log_flows: bool, *, every: bool) -> tuple[list[str], list[str]]:
    """(sets, chain) of `watch`: each new (address, port) destination of a TCP/UDP flow logged once
    per window (a dynamic set remembers it, so repeated connections to one service are not logged
    again): port-scan counting (distinct destinations per window: the same count) and the forensic
    trail; with `every`, each new flow (conntrack says which are new) counted per (address, protocol,
    port) in a dynamic set with counters, read back by learned_flows(). Never a verdict."""
    if not (scan or log_flows or every):
        return [], []
    sets: list[str] = []
    rules: list[str] = []
    if every:  # counted in the kernel per destination, read by learned_flows(): no message per flow
        sets += [f"  set {name} {{ type {kind} . inet_proto . inet_service; size {LEARN_SET_SIZE}; flags dynamic; "
                 "counter; }" for _fam, name, kind in LEARN_SETS]
        rules += [f"    meta l4proto {{ tcp, udp }} update @{name} {{ {fam} daddr . meta l4proto . th dport }}"
                  for fam, name, _kind in LEARN_SETS]
    if scan or log_flows:
        window = max(1, int(net.port_scan.window_s)) if scan and net.port_scan is not None else FLOW_WINDOW_S
        families = (("ip", "flows4", "ipv4_addr"), ("ip6", "flows6", "ipv6_addr"))
        sets += [f"  set {name} {{ type {kind} . inet_service; size 65536; flags dynamic,timeout; timeout {window}s; }}"
                 for _fam, name, kind in families]
        rules += [f"    meta l4proto {{ tcp, udp }} {fam} daddr . th dport != @{name} add @{name} {{ {fam} daddr . "
                  f'th dport }} log prefix "g|flow|-|0" group {NFLOG_GROUP}' for fam, name, _kind in families]
    return sets, ["  chain watch {", *rules, "  }"]


def learned_flows(sock: socket.socket) -> dict[tuple[str, str, int], int]:
    """{(address, protocol, port): new flows} counted since our table was loaded in the namespace of
    `sock` (a netfilter netlink socket there: kernel/nftset.py), from the `count_flows` sets."""
    out: dict[tuple[str, str, int], int] = {}
    for _fam, name, kind in LEARN_SETS:
        size = 4 if kind == "ipv4_addr" else 16
        for key, packets in nftset.counters(sock, TABLE, name).items():
            if len(key) < size + 8:
                continue
            proto = {6: "tcp", 17: "udp"}.get(key[size], str(key[size]))
            addr = str(ipaddress.ip_address(key[:size]))
            out[(addr, proto, int.from_bytes(key[size + 4 : size + 6], "big"))] = packets
    return out


def _to_resolver(dns_port: int | None) -> list[str]:
    """DNS steered to the defender's resolver (the nat chain ran first: the app asked port 53 anywhere)
    passes the outbound lists: the resolver decides names itself, and an outbound allow list would
    otherwise refuse every lookup."""
    if dns_port is None:
        return []
    return [f"    ip daddr 127.0.0.1 meta l4proto {{ tcp, udp }} th dport {dns_port} accept"]


def _inbound(net: NetworkControls, dns_port: int | None, logged: Callable[[str, int], str]) -> list[str]:
    """Listening-port rules under prevent: new inbound TCP/UDP flows to a denied port (or one not on
    the allow list) are refused in the kernel, whatever listens there (the defender's own resolver
    port excepted). Under alert the defender only reports listeners (see listening.py)."""
    lc = net.listening
    if net.effect != "prevent" or not (lc.deny or lc.allow):
        return []
    lines = ["  chain input {", "    type filter hook input priority 0; policy accept;",
             "    ct state established,related accept"]
    if dns_port is not None:
        lines.append(f"    meta l4proto {{ tcp, udp }} th dport {dns_port} accept")
    for i, r in enumerate(lc.deny):
        lines.append(f"    meta l4proto {{ tcp, udp }} th dport {_ports([r]) or '0-65535'} "
                     f"{logged('network.listening.deny', i)}")
    allowed = _ports(lc.allow) if lc.allow else None
    if allowed:
        lines.append(f"    meta l4proto {{ tcp, udp }} th dport != {allowed} {logged('network.listening.allow', -1)}")
    lines.append("  }")
    return lines


def block_new_flows(pid: int, seconds: float) -> None:
    """Refuse every new TCP/UDP flow of the container for `seconds` (a scan was seen under prevent)."""
    t = max(1, int(seconds))
    apply(pid, f"add element inet {TABLE} scan_block {{ tcp timeout {t}s, udp timeout {t}s }}\n")


def clear_script() -> str:
    return f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"


def apply(pid: int, script: str) -> None:
    """Load `script` into the network namespace of `pid` (nsenter + nft: one atomic transaction)."""
    proc = subprocess.run(["nsenter", "-t", str(pid), "-n", "nft", "-f", "-"], input=script, text=True,
                          capture_output=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"nft in the network namespace of pid {pid}: {proc.stderr.strip()[:500]}")


def describe(net: NetworkControls, control: str, index: int) -> str:
    """What a logged prefix refers to, for the audit message."""
    if control == "network.outbound.deny" and 0 <= index < len(net.outbound.deny):
        t = net.outbound.deny[index]
        return f"denied destination {t.cidr} ports {_ports(t.ports) or 'any'}"
    if control == "network.outbound.allow":
        return "destination not in the allowed list"
    if control == "network.bad_reputation":
        return "bad-reputation address"
    if control == "network.port_scan":
        return "new connections refused while the container is scanning"
    if control == "network.listening.deny" and 0 <= index < len(net.listening.deny):
        r = net.listening.deny[index]
        return f"listening port {_ports([r]) or 'any'} is denied"
    if control == "network.listening.allow":
        return "port is not an allowed listening port"
    if control == "dns.allow":
        return "destination was not resolved from an allowed name"
    return control
