"""Pure decisions: (event facts, rule) → Decision. No kernel, no I/O; shared by defender and console."""

from __future__ import annotations

import bisect
import ipaddress
import os
import re
import threading
from dataclasses import dataclass
from fnmatch import fnmatchcase

from garrison.policy.families import family_of
from garrison.policy.model import ArgvPattern, Effect, NetTarget, ProcessPattern, Rule

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Decision:
    """`violation` is True when some control objects; `effect` says whether to alert or prevent."""

    violation: bool
    effect: Effect = "disable"
    control: str = ""
    reason: str = ""

    @property
    def blocked(self) -> bool:
        return self.violation and self.effect == "prevent"

    @property
    def audited(self) -> bool:
        return self.violation and self.effect in ("alert", "prevent")


ALLOW = Decision(violation=False)


def _path_match(pattern: str, exe: str) -> bool:
    family = family_of(pattern)
    if family is not None:
        return os.path.basename(exe) in family
    if "/" not in pattern:
        return fnmatchcase(os.path.basename(exe), pattern)
    return fnmatchcase(exe, pattern)


def _args_match(pattern: ProcessPattern, argv: list[str]) -> bool:
    return not isinstance(pattern, ArgvPattern) or re.search(pattern.args, " ".join(argv[1:])) is not None


def process_pattern_matches(pattern: ProcessPattern, exe: str, argv: list[str]) -> bool:
    """Path-based: the pattern's path glob (or bare basename, or @family names) against `exe`."""
    path = pattern.path if isinstance(pattern, ArgvPattern) else pattern
    return _path_match(path, exe) and _args_match(pattern, argv)


def decide_exec(
    rule: Rule | None,
    exe: str,
    argv: list[str],
    *,
    in_baseline: bool = True,
    copy_of: dict[int, str] | None = None,
) -> Decision:
    """Decide an exec of `exe` (the resolved path; for `ld.so X`, the caller passes X).

    `copy_of` maps the index of a deny pattern to the file it named at policy load when `exe` has
    that file's content (identity match, computed by the defender): a renamed copy of a denied
    program is denied as the program itself (an argv pattern still needs its args to match)."""
    if rule is None:
        return ALLOW
    pc = rule.processes
    if pc.effect == "disable":
        return ALLOW
    for i, p in enumerate(pc.deny):
        if process_pattern_matches(p, exe, argv):
            return Decision(True, pc.effect, "processes.deny", f"{exe} matches denied process {_show(p)}")
        if copy_of and i in copy_of and _args_match(p, argv):
            return Decision(
                True,
                pc.effect,
                "processes.deny",
                f"{exe} is a copy of {copy_of[i]} (same content), denied by {_show(p)}",
            )
    if pc.allow and not any(process_pattern_matches(p, exe, argv) for p in pc.allow):
        return Decision(True, pc.effect, "processes.allow", f"{exe} is not in the allowed process list")
    if pc.drift_prevention and not in_baseline:
        return Decision(
            True, pc.effect, "processes.drift_prevention", f"{exe} was not in the app image at start"
        )
    return ALLOW


NOTHING_TO_RUN = frozenset({"ENOENT", "ENOTDIR", "ENAMETOOLONG", "EBADF"})


def exec_controls_on(rule: Rule | None) -> bool:
    """Does the rule decide execs at all (a deny/allow list or drift prevention, not disabled)?"""
    if rule is None:
        return False
    pc = rule.processes
    return pc.effect != "disable" and bool(pc.deny or pc.allow or pc.drift_prevention)


def decide_unidentified_exec(rule: Rule | None, error: str, target: str) -> Decision:
    """An exec whose file the defender could not identify as the app sees it; `error` is the errno name
    the lookup failed with. A missing file (ENOENT/ENOTDIR: libc's PATH search tries several) is no
    violation: nothing can run. Anything else is a violation of the exec controls in force (under
    prevent the exec is refused: fail closed)."""
    if not exec_controls_on(rule) or error in NOTHING_TO_RUN:
        return ALLOW
    assert rule is not None
    return Decision(
        True,
        rule.processes.effect,
        "processes.unidentified",
        f"the program {target!r} cannot be identified as the app sees it ({error})",
    )


def decide_fork(
    rule: Rule | None,
    *,
    forks_last_second: float,
    live_procs: int | None,
    user_tasks: int | None = None,
    nproc_limit: int | None = None,
) -> Decision:
    """A new process (fork, vfork, clone without CLONE_THREAD) asked for by the app tree.

    `forks_last_second` counts this one; `live_procs` is the tree's live processes before it (None
    when a cheap upper bound already shows it below the cap); `user_tasks`/`nproc_limit` are the app
    uid's tasks and its RLIMIT_NPROC when one is set: at the limit the kernel refuses the fork
    (EAGAIN) whatever the defender says, so the guard refuses it itself and reports it."""
    fb = rule.processes.fork_bomb_guard if rule is not None else None
    if rule is None or fb is None or rule.processes.effect == "disable":
        return ALLOW
    eff = rule.processes.effect
    control = "processes.fork_bomb_guard"
    if forks_last_second > fb.max_forks_per_s:
        return Decision(
            True, eff, control, f"fork rate {forks_last_second:.0f}/s exceeds {fb.max_forks_per_s}/s"
        )
    if live_procs is not None and live_procs >= fb.max_procs:
        return Decision(True, eff, control, f"{live_procs} live processes reach the cap of {fb.max_procs}")
    if nproc_limit and user_tasks is not None and user_tasks >= nproc_limit:
        return Decision(
            True,
            "prevent",
            control,
            f"the app's user has {user_tasks} tasks: RLIMIT_NPROC ({nproc_limit}) refuses more",
        )
    return ALLOW


def _show(p: ProcessPattern) -> str:
    return p if isinstance(p, str) else f"{p.path} /{p.args}/"


def _in(targets: list[NetTarget], ip: IPAddress, port: int, proto: str) -> NetTarget | None:
    for t in targets:
        if t.matches(ip, port, proto):
            return t
    return None


class _IntervalSet:
    """Merged [start, end] address intervals per IP version: O(log n) lookups for lists of 100k."""

    def __init__(self, cidrs: list[str]) -> None:
        spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for c in cidrs:
            net = ipaddress.ip_network(c, strict=False)
            spans[net.version].append((int(net.network_address), int(net.broadcast_address)))
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for v, items in spans.items():
            merged: list[list[int]] = []
            for lo, hi in sorted(items):
                if merged and lo <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], hi)
                else:
                    merged.append([lo, hi])
            self._starts[v] = [m[0] for m in merged]
            self._ends[v] = [m[1] for m in merged]

    def contains(self, ip: IPAddress) -> bool:
        starts, n = self._starts[ip.version], int(ip)
        i = bisect.bisect_right(starts, n) - 1
        return i >= 0 and n <= self._ends[ip.version][i]


_BAD_REP_CACHE: dict[int, tuple[list[str], int, _IntervalSet]] = {}
_BAD_REP_LOCK = threading.Lock()


def _bad_reputation(cidrs: list[str]) -> _IntervalSet:
    """Compiled once per list object (policies are replaced, not mutated, on every push); the lock
    keeps concurrent callers from compiling a 100k list several times."""
    with _BAD_REP_LOCK:
        hit = _BAD_REP_CACHE.get(id(cidrs))
        if hit is not None and hit[0] is cidrs and hit[1] == len(cidrs):
            return hit[2]
        compiled = _IntervalSet(cidrs)
        if len(_BAD_REP_CACHE) >= 16:
            _BAD_REP_CACHE.clear()
        _BAD_REP_CACHE[id(cidrs)] = (cidrs, len(cidrs), compiled)
        return compiled


def decide_connect(
    rule: Rule | None,
    ip: str | IPAddress,
    port: int,
    proto: str = "tcp",
    *,
    pinned_names: list[str] | None = None,
) -> Decision:
    """Decide an outbound connect/sendto. `pinned_names` are DNS names that resolved to `ip`
    (from the defender's resolver); with a DNS allow-list, an IP no allowed name resolved to is refused."""
    if rule is None:
        return ALLOW
    nc = rule.network
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if nc.effect != "disable":
        cand = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped else addr
        if nc.bad_reputation_ips and _bad_reputation(nc.bad_reputation_ips).contains(cand):
            return Decision(
                True, nc.effect, "network.bad_reputation_ips", f"{addr} is on the bad-reputation list"
            )
        hit = _in(nc.outbound.deny, addr, port, proto)
        if hit is not None:
            return Decision(
                True, nc.effect, "network.outbound.deny", f"{addr}:{port}/{proto} matches deny {hit.cidr}"
            )
        if nc.outbound.allow and _in(nc.outbound.allow, addr, port, proto) is None:
            dns_ok = pinned_names is not None and any(dns_name_allowed(rule, n) for n in pinned_names)
            if not (dns_ok and rule.dns.allow):
                return Decision(
                    True,
                    nc.effect,
                    "network.outbound.allow",
                    f"{addr}:{port}/{proto} is not in the allowed list",
                )
    dc = rule.dns
    if (
        dc.effect != "disable"
        and dc.allow
        and pinned_names is not None
        and not addr.is_loopback
        and (
            not any(dns_name_allowed(rule, n) for n in pinned_names)
            and _in(nc.outbound.allow, addr, port, proto) is None
        )
    ):
        return Decision(True, dc.effect, "dns.allow", f"{addr} was not resolved from an allowed name")
    return ALLOW


def dns_name_allowed(rule: Rule, name: str) -> bool:
    name = name.lower().rstrip(".")
    dc = rule.dns
    if any(fnmatchcase(name, d) for d in dc.deny):
        return False
    return not dc.allow or any(fnmatchcase(name, d) for d in dc.allow)


def decide_dns(rule: Rule | None, name: str) -> Decision:
    if rule is None or rule.dns.effect == "disable":
        return ALLOW
    name = name.lower().rstrip(".")
    dc = rule.dns
    for d in dc.deny:
        if fnmatchcase(name, d):
            return Decision(True, dc.effect, "dns.deny", f"{name} matches denied domain {d}")
    if dc.allow and not any(fnmatchcase(name, d) for d in dc.allow):
        return Decision(True, dc.effect, "dns.allow", f"{name} is not in the allowed domain list")
    return ALLOW


def decide_bind(rule: Rule | None, port: int) -> Decision:
    """Listening-port control; port 0 (ephemeral) is never a violation."""
    if rule is None or port == 0:
        return ALLOW
    lc = rule.network.listening
    eff = lc.effect or rule.network.effect
    if eff not in ("alert", "prevent"):  # disable; `learn` only reaches here on a raw rule
        return ALLOW
    if any(port in r for r in lc.deny):
        return Decision(True, eff, "network.listening.deny", f"listening on port {port} is denied")
    if lc.allow and not any(port in r for r in lc.allow):
        return Decision(True, eff, "network.listening.allow", f"port {port} is not an allowed listening port")
    return ALLOW


@dataclass(frozen=True)
class ContainerPrivileges:
    """What a container has that weakens its isolation, as the cell defender observed it."""

    privileged: bool = False  # no user namespace: uid 0 inside is the host's root
    host_network: bool = False
    host_pid: bool = False
    host_ipc: bool = False
    host_mount: bool = False
    capabilities: frozenset[str] = frozenset()  # effective capabilities of the app process


def decide_privileges(rule: Rule | None, seen: ContainerPrivileges) -> list[Decision]:
    """One decision per privilege the rule does not allow (empty when nothing objects)."""
    if rule is None or rule.privileges.effect == "disable":
        return []
    pc, eff = rule.privileges, rule.privileges.effect
    out = []
    for flag, allowed, what in (
        (seen.privileged, pc.allow_privileged, "runs privileged: root in the container is the cell's root"),
        (seen.host_network, pc.allow_host_network, "shares the cell's network namespace"),
        (seen.host_pid, pc.allow_host_pid, "shares the cell's PID namespace"),
        (seen.host_ipc, pc.allow_host_ipc, "shares the cell's IPC namespace"),
        (seen.host_mount, pc.allow_host_mount, "shares the cell's mount namespace"),
    ):
        if flag and not allowed:
            out.append(Decision(True, eff, "privileges", f"container {what}"))
    caps = sorted(seen.capabilities & set(pc.denied_capabilities))
    if caps:
        out.append(Decision(True, eff, "privileges.capabilities", f"app process holds {', '.join(caps)}"))
    return out
