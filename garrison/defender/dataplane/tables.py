"""Compile a rule's network controls into the flat tables the native loop decides from.

The tables encode `garrison.policy.evaluate.decide_connect` for canonical addresses (IPv4, and IPv6
that is neither unspecified, v4-mapped nor v4-compatible): every outbound deny/allow entry becomes an
entry with its protocol and port ranges; the address space is cut into elementary intervals (one
sorted interval list per family) each holding the ascending indices of the entries whose CIDR covers
it, so a lookup is one binary search plus a walk over the few entries of that interval, and the first
deny entry that matches is the one the evaluator would report. Bad-reputation lists become merged
intervals. What the tables cannot decide exactly (pinned DNS names, port-scan bookkeeping, effects
other than alert/prevent) is flagged so the loop hands those notifications to Python.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from garrison.policy.evaluate import _bad_reputation
from garrison.policy.learning import view_learning
from garrison.policy.model import NetTarget, Rule

MAGIC = 0x31504447  # "GDP1", checked by _native.c

F_INERT = 1 << 0
F_EMULATE = 1 << 1
F_HANDOFF_NET = 1 << 2
F_DNS_ALLOW = 1 << 3
F_NATIVE_VERDICT = 1 << 4
F_EXEC_FREE = 1 << 5
F_FORK_FREE = 1 << 6
F_EXEC_CACHE = 1 << 7
F_EXEC_PREVENT = 1 << 8
F_FORK_GUARD = 1 << 9

EFFECTS = {"disable": 0, "alert": 1, "prevent": 2}
PROTOS = {"any": 0, "tcp": 1, "udp": 2}
PROTO_NAMES = {0: None, 1: "tcp", 2: "udp"}
CONTROLS = {1: "network.bad_reputation_ips", 2: "network.outbound.deny", 3: "network.outbound.allow"}

MAX_INDEX_WORDS = 2_000_000
"""Above this many entry references (deeply nested CIDR lists) the tables would cost more memory than
they save: the rule's network decisions are then left to Python."""

_HDR = struct.Struct("=14I")
_ENTRY = struct.Struct("=B3xII")
_PORT = struct.Struct("=HH")
_IV4 = struct.Struct("=IIII")
_IV6 = struct.Struct("=16s16sII")
_BAD4 = struct.Struct("=II")
_BAD6 = struct.Struct("=16s16s")
_V4_MAX = (1 << 32) - 1
_V6_MAX = (1 << 128) - 1


@dataclass
class Compiled:
    """The blob for `_native.Loop.set_tables` and what Python needs to turn records into audits."""

    blob: bytes
    rule: Rule | None
    entries: list[NetTarget] = field(default_factory=list)
    flags: int = 0


def inert(rule: Rule | None) -> bool:
    """No outbound, DNS or port-scan control can object to any destination (NetworkGuard._inert)."""
    if rule is None:
        return True
    if "network" in view_learning(rule):
        return False
    nc, dc = rule.network, rule.dns
    net_idle = nc.effect == "disable" or not (
        nc.outbound.allow
        or nc.outbound.deny
        or nc.bad_reputation_ips
        or (nc.port_scan is not None and nc.port_scan.enabled)
    )
    dns_idle = dc.effect == "disable" or not (dc.allow or dc.deny)
    return net_idle and dns_idle


def process_flags(rule: Rule | None) -> int:
    """Exec and fork notifications the loop may answer itself: when no process control can object."""
    if rule is None or rule.processes.effect == "disable":
        return F_EXEC_FREE | F_FORK_FREE
    pc = rule.processes
    flags = 0
    if not (pc.deny or pc.allow or pc.drift_prevention):
        flags |= F_EXEC_FREE
    if pc.fork_bomb_guard is None:
        flags |= F_FORK_FREE
    return flags


def exec_cache_flags(rule: Rule | None) -> int:
    """Under exec controls, the execs Python let through with nothing to audit may be answered from
    the loop's verdict cache (NativeDataplane.remember_exec); under prevent, a path with nothing to
    run gets ENOENT from the loop as it would from Python."""
    if rule is None or rule.processes.effect == "disable":
        return 0
    pc = rule.processes
    if not (pc.deny or pc.allow or pc.drift_prevention):
        return 0
    return F_EXEC_CACHE | (F_EXEC_PREVENT if pc.effect == "prevent" else 0)


def fork_guard_flags(rule: Rule | None) -> int:
    """Under the fork-bomb guard, forks clearly inside its limits (the loop's own rate count, its bound
    on the tree, the task count Python last read) are answered by the loop; the rest by Python."""
    if rule is None or rule.processes.effect == "disable" or rule.processes.fork_bomb_guard is None:
        return 0
    return F_FORK_GUARD


MAX_LANDLOCK_PORTS = 1024


def landlock_ports(rule: Rule | None) -> list[int] | None:
    """The TCP ports a rule allows when it restricts nothing but TCP ports — then Landlock (ABI 4+)
    can refuse every other TCP connect in the kernel and connect need not be trapped at all.
    None when the rule needs more than that (addresses, UDP, deny entries, bad-reputation, port
    scans, DNS controls, an alert effect — an alert must let the call happen and audit it)."""
    if rule is None:
        return None
    nc, dc = rule.network, rule.dns
    if nc.effect != "prevent" or not nc.outbound.allow or nc.outbound.deny or nc.bad_reputation_ips:
        return None
    if nc.port_scan is not None and nc.port_scan.enabled:
        return None
    if dc.effect != "disable" and (dc.allow or dc.deny):
        return None
    ports: set[int] = set()
    for t in nc.outbound.allow:
        if t.cidr != "*" or t.protocol != "tcp":
            return None
        for r in t.ports:
            if r.end - r.start + len(ports) >= MAX_LANDLOCK_PORTS:
                return None
            ports.update(range(r.start, r.end + 1))
    return sorted(ports)


def _spans(target: NetTarget) -> list[tuple[int, int, int]]:
    """(version, lo, hi) address ranges a target's CIDR covers."""
    if target.cidr == "*":
        return [(4, 0, _V4_MAX), (6, 0, _V6_MAX)]
    net = ipaddress.ip_network(target.cidr, strict=False)
    return [(net.version, int(net.network_address), int(net.broadcast_address))]


def _intervals(spans: list[tuple[int, int, int]]) -> list[tuple[int, int, list[int]]]:
    """Elementary intervals [lo, hi] with the ascending entry indices covering them (sweep line);
    neighbours with the same index list are merged."""
    events: list[tuple[int, int, int]] = []  # (point, kind 0=open 1=close-after, entry)
    for entry, lo, hi in spans:
        events.append((lo, 0, entry))
        events.append((hi + 1, 1, entry))
    points = sorted({p for p, _, _ in events})
    opens: dict[int, list[int]] = {}
    closes: dict[int, list[int]] = {}
    for p, kind, entry in events:
        (closes if kind else opens).setdefault(p, []).append(entry)
    active: set[int] = set()
    out: list[tuple[int, int, list[int]]] = []
    for i, p in enumerate(points):
        for e in closes.get(p, ()):
            active.discard(e)
        for e in opens.get(p, ()):
            active.add(e)
        if not active or i + 1 >= len(points):
            continue
        idx = sorted(active)
        hi = points[i + 1] - 1
        if out and out[-1][2] == idx and out[-1][1] + 1 == p:
            out[-1] = (out[-1][0], hi, idx)
        else:
            out.append((p, hi, idx))
    return out


def compile_rule(rule: Rule | None, *, emulate: bool, native_verdict: bool = True) -> Compiled:
    """Tables for `rule`. `emulate`: the guard can take sockets with pidfd_getfd (else the loop hands
    network decisions to Python's CONTINUE / Garden path)."""
    flags = F_EMULATE if emulate else 0
    if native_verdict:
        flags |= F_NATIVE_VERDICT
    if inert(rule):
        flags |= F_INERT
    flags |= process_flags(rule) | exec_cache_flags(rule) | fork_guard_flags(rule)
    if rule is None:
        return Compiled(_HDR.pack(MAGIC, flags, 0, 0, *([0] * 10)), None, [], flags)
    nc, dc = rule.network, rule.dns
    if nc.effect not in EFFECTS or dc.effect not in EFFECTS:
        flags |= F_HANDOFF_NET
    if nc.effect != "disable" and nc.port_scan is not None and nc.port_scan.enabled:
        flags |= F_HANDOFF_NET  # per-process distinct-destination counting lives in Python
    if dc.allow:
        flags |= F_DNS_ALLOW
    entries = [*nc.outbound.deny, *nc.outbound.allow]
    n_deny = len(nc.outbound.deny)
    entry_blob, port_blob = bytearray(), bytearray()
    n_ports = 0
    by_version: dict[int, list[tuple[int, int, int]]] = {4: [], 6: []}
    for i, t in enumerate(entries):
        entry_blob += _ENTRY.pack(PROTOS[t.protocol], n_ports, len(t.ports))
        for r in t.ports:
            port_blob += _PORT.pack(r.start, r.end)
            n_ports += 1
        for version, lo, hi in _spans(t):
            by_version[version].append((i, lo, hi))
    idx_words: list[int] = []
    iv4, iv6 = bytearray(), bytearray()
    n_iv = {4: 0, 6: 0}
    for version in (4, 6):
        for lo, hi, idx in _intervals(by_version[version]):
            if version == 4:
                iv4 += _IV4.pack(lo, hi, len(idx_words), len(idx))
            else:
                iv6 += _IV6.pack(lo.to_bytes(16, "big"), hi.to_bytes(16, "big"), len(idx_words), len(idx))
            idx_words.extend(idx)
            n_iv[version] += 1
            if len(idx_words) > MAX_INDEX_WORDS:
                return _handoff_only(rule, flags)
    bad4, bad6 = bytearray(), bytearray()
    n_bad = {4: 0, 6: 0}
    if nc.bad_reputation_ips:
        compiled = _bad_reputation(nc.bad_reputation_ips)
        for lo, hi in zip(compiled._starts[4], compiled._ends[4], strict=True):
            bad4 += _BAD4.pack(lo, hi)
            n_bad[4] += 1
        for lo, hi in zip(compiled._starts[6], compiled._ends[6], strict=True):
            bad6 += _BAD6.pack(lo.to_bytes(16, "big"), hi.to_bytes(16, "big"))
            n_bad[6] += 1
    header = _HDR.pack(
        MAGIC, flags, EFFECTS.get(nc.effect, 0), EFFECTS.get(dc.effect, 0),
        len(entries), n_deny, n_ports, n_iv[4], n_iv[6], len(idx_words), n_bad[4], n_bad[6], 0, 0,
    )  # fmt: skip
    idx_blob = struct.pack(f"={len(idx_words)}I", *idx_words)
    blob = b"".join((header, entry_blob, port_blob, iv4, iv6, idx_blob, bad4, bad6))
    return Compiled(blob, rule, entries, flags)


def handoff_all(rule: Rule | None) -> Compiled:
    """Tables that decide nothing: every notification goes to Python (the safe answer when a rule
    cannot be compiled)."""
    return Compiled(_HDR.pack(MAGIC, F_HANDOFF_NET, 0, 0, *([0] * 10)), rule, [], F_HANDOFF_NET)


def _handoff_only(rule: Rule, flags: int) -> Compiled:
    flags |= F_HANDOFF_NET
    return Compiled(_HDR.pack(MAGIC, flags, 0, 0, *([0] * 10)), rule, [], flags)


_PIN4 = struct.Struct("=II")
_PIN6 = struct.Struct("=16sI")


def with_pins(compiled: Compiled, pins: dict[str, dict[str, float]] | None) -> bytes:
    """The compiled blob plus the addresses an *allowed* DNS name resolved to (the resolver proxy's
    pin table: ip → {name: monotonic expiry}). The loop lets a connect to one of them through where
    the evaluator would (an allow-list miss or the DNS allow-list pass on a pinned allowed name);
    an address not in the set is handed to Python, so a stale set only costs speed."""
    rule = compiled.rule
    if rule is None or not rule.dns.allow or not pins or not (compiled.flags & F_DNS_ALLOW):
        return compiled.blob
    from garrison.policy.evaluate import dns_name_allowed

    v4: list[tuple[int, int]] = []
    v6: list[tuple[bytes, int]] = []
    for ip, names in pins.items():
        until = max((u for n, u in names.items() if dns_name_allowed(rule, n)), default=None)
        if until is None:
            continue
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            continue
        expiry = int(until) - 1  # whole seconds, rounded so the loop never trusts an expired pin
        if addr.version == 4:
            v4.append((int(addr), expiry))
        else:
            v6.append((addr.packed, expiry))
    if not v4 and not v6:
        return compiled.blob
    v4.sort()
    v6.sort()
    head = list(_HDR.unpack_from(compiled.blob))
    head[12], head[13] = len(v4), len(v6)
    return b"".join(
        (
            _HDR.pack(*head),
            compiled.blob[_HDR.size :],
            b"".join(_PIN4.pack(ip, until) for ip, until in v4),
            b"".join(_PIN6.pack(a, until) for a, until in v6),
        )
    )
