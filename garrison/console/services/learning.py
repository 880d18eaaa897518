"""Learning: profiles built from defenders' reports, the rule they propose, review → accept → enforce.

Profiles are per app (org/space/app, across instances and restarts). The console proposes a rule
from a profile: a process allow-list, an outbound allow-list by DNS name (names go to the DNS
allow-list, whose pinning admits exactly the addresses those names resolved to) and by address for
destinations reached without a name, the listening ports, and the DNS allow-list. Accepting puts the
rule in alert mode; enforcing switches it to prevent. Every step is in the management audit.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
from typing import Any

from garrison.channel import protocol as p
from garrison.console.services.errors import Conflict, NotFound
from garrison.console.services.policies import PolicyService
from garrison.console.store.open import Store
from garrison.console.store.profiles import SeenItem
from garrison.defender.profile import argv_shape
from garrison.policy.audit import AuditEvent
from garrison.policy.model import (
    DnsControls,
    ListeningControls,
    NetTarget,
    NetworkControls,
    OutboundControls,
    PortRange,
    ProcessControls,
    Rule,
    RuntimePolicy,
    Scope,
)
from garrison.policy.scope import Identity, select_rule_raw

RULE_PREFIX = "learned: "
SYSTEM_USER = "system"
"""who the management audit names for what the console did by itself (auto-accept)"""
LEARN_CONTROLS = ("processes", "network", "listening", "dns")


def item_key(kind: str, ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([kind, ident], sort_keys=True).encode()).hexdigest()


def report_items(report: p.ProfileReport) -> list[SeenItem]:
    """The report's items with their identity keys (what makes two sightings the same thing).
    What cannot be a rule entry (an address that is no IP, a name that is no DNS name) is dropped:
    a defender's report never makes a proposal or the map fail."""
    out: list[SeenItem] = []
    for pr in report.processes:
        ident = {"exe": pr.exe, "argv_shape": pr.argv_shape, "parent": pr.parent}
        out.append(_seen("process", ident, {**ident, "sha256": pr.sha256}, pr))
    for d in report.destinations:
        try:
            ip = str(ipaddress.ip_address(d.ip))
        except ValueError:
            continue
        ident = {"ip": ip, "port": d.port, "protocol": d.protocol or "tcp"}
        names = [n for n in (dns_name(x) for x in d.names) if n]
        out.append(_seen("destination", ident, {**ident, "names": names}, d))
    for n in report.dns:
        name = dns_name(n.name)
        if name:
            out.append(_seen("dns", {"name": name}, {"name": name}, n))
    for lp in report.listening:
        ident = {"port": lp.port, "protocol": lp.protocol or "tcp"}
        out.append(_seen("listen", ident, ident, lp))
    return out


_DNS_NAME = re.compile(r"[a-z0-9_\-]+(\.[a-z0-9_\-]+)*")


def dns_name(name: str) -> str:
    """The name as a DNS allow/deny entry takes it (lower case, no trailing dot), or "" if it is none."""
    name = name.lower().rstrip(".")
    return name if len(name) <= 253 and _DNS_NAME.fullmatch(name) else ""


def _seen(kind: str, ident: dict[str, Any], facts: dict[str, Any], s: p._Seen) -> SeenItem:
    return SeenItem(kind, item_key(kind, ident), facts, s.count, s.first_seen, s.last_seen)


ANOMALY_CONTROLS = frozenset(
    {"processes.allow", "network.outbound.allow", "dns.allow", "network.listening.allow"}
)


def _anomaly_item(e: AuditEvent) -> SeenItem | None:
    """The profile item an allow-list violation describes (None when the audit lacks the facts)."""
    seen = p._Seen(count=1, first_seen=e.time, last_seen=e.time)
    if e.control == "processes.allow" and e.exe:
        ident = {"exe": e.exe[:4096], "argv_shape": argv_shape(e.argv or [])[:16], "parent": ""}
        return _seen("process", ident, {**ident, "sha256": ""}, seen)
    if e.control == "network.listening.allow" and e.dest_port:
        ident = {"port": e.dest_port, "protocol": e.protocol or "tcp"}
        return _seen("listen", ident, ident, seen)
    if e.dest_ip and e.dest_port is not None:
        try:
            ip = str(ipaddress.ip_address(e.dest_ip))
        except ValueError:
            return None
        ident = {
            "ip": ip,
            "port": e.dest_port,
            "protocol": e.protocol if e.protocol in ("tcp", "udp") else "tcp",
        }
        name = dns_name(e.dest_name or "")
        return _seen("destination", ident, {**ident, "names": [name] if name else []}, seen)
    name = dns_name(e.dest_name or "")
    return _seen("dns", {"name": name}, {"name": name}, seen) if name else None


# What a proposal allows where the app was never seen doing something: in the policy model an empty
# allow-list means "any", so "nothing" is an allow-list whose only entry no real call can match (no
# connect goes to 0.0.0.0 port 0; a listening socket always has a real port).
NOTHING_OUTBOUND = NetTarget(cidr="0.0.0.0/32", protocol="tcp", ports=[PortRange(start=0, end=0)])
NOTHING_LISTENING = PortRange(start=0, end=0)


def rule_name(org: str, space: str, app: str) -> str:
    """The app's own rule; names too long for a rule name keep a digest, so two apps never share one."""
    name = f"{RULE_PREFIX}{org}/{space}/{app}"
    if len(name) <= 200:
        return name
    return f"{name[:170]}~{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def app_scope(org: str, space: str, app: str) -> Scope:
    """Exactly this app: glob characters in CF names are escaped so the scope matches nothing else."""
    return Scope(orgs=[_literal(org)], spaces=[_literal(space)], apps=[_literal(app)])


def _literal(name: str) -> str:
    escaped = "".join(f"[{ch}]" if ch in "*?[]" else ch for ch in name) or "*"
    return escaped if len(escaped) <= 512 else "".join("?" if ch in "*?[]" else ch for ch in name)


class LearningService:
    def __init__(self, store: Store, policies: PolicyService) -> None:
        self.store = store
        self.policies = policies

    # -- ingestion --------------------------------------------------------------------------------
    def ingest(self, defender_id: str, identity: dict[str, Any], report: p.ProfileReport) -> int:
        """Merge a defender's report into its app's profile; returns how many items were new."""
        org, space, app = identity.get("org", ""), identity.get("space", ""), identity.get("app_name", "")
        if not app:
            app = identity.get("app_id", "") or defender_id
        prof = self.store.profiles.ensure(org, space, app)
        new = self.store.profiles.ingest(
            prof["id"],
            f"{defender_id}/{report.run_id}",
            int(identity.get("instance") or 0),
            report_items(report),
            addresses=report.addresses,
            routes=[r.lower().rstrip(".") for r in report.routes],
        )
        return len(new)

    def ingest_anomalies(self, events: list[AuditEvent]) -> int:
        """Activity outside an accepted profile, as the defenders audit it (allow-list violations in
        alert or prevent), joins the profile as items first seen now: the map shows it as
        `new_since_accept`. Returns how many items were new."""
        new = 0
        by_app: dict[tuple[str, str, str], list[AuditEvent]] = {}
        for e in events:
            if e.control in ANOMALY_CONTROLS:
                by_app.setdefault((e.org, e.space, e.app_name), []).append(e)
        for (org, space, app), evs in by_app.items():
            prof = self.store.profiles.find(org, space, app)
            if prof is None or prof["accepted_at"] is None:
                continue
            for e in evs:
                seen = _anomaly_item(e)
                if seen is not None:
                    new += len(
                        self.store.profiles.ingest(
                            prof["id"], f"{e.defender_id}/audit/{e.id}", e.instance, [seen]
                        )
                    )
        return new

    # -- reads ------------------------------------------------------------------------------------
    def profile(self, profile_id: int) -> dict[str, Any]:
        row = self.store.profiles.get(profile_id)
        if row is None:
            raise NotFound(f"no profile {profile_id}")
        return row

    def summaries(self, **filters: Any) -> list[dict[str, Any]]:
        rows = self.store.profiles.list(**filters)
        counts = self.store.profiles.item_summary([r["id"] for r in rows])
        now = time.time()
        return [self._summary(r, counts.get(r["id"], {}), now) for r in rows]

    def _summary(self, row: dict[str, Any], counts: dict[str, int], now: float) -> dict[str, Any]:
        since_new = now - (row["last_new_at"] or row["learning_since"])
        window_done = now - row["learning_since"] >= row["window_hours"] * 3600
        stable = since_new >= row["stable_hours"] * 3600
        return {
            "id": row["id"],
            "org": row["org"],
            "space": row["space"],
            "app": row["app"],
            "state": row["state"],
            "learning_since": row["learning_since"],
            "last_new_at": row["last_new_at"],
            "last_report_at": row["last_report_at"],
            "window_hours": row["window_hours"],
            "stable_hours": row["stable_hours"],
            "window_elapsed": window_done,
            "stable": stable,
            "ready": row["state"] == "learning"
            and (window_done or stable)
            and any(counts.get(k, 0) for k in ("process", "destination", "dns", "listen")),
            "accepted_at": row["accepted_at"],
            "accepted_by": row["accepted_by"],
            "accepted_revision": row["accepted_revision"],
            "instances": counts.get("instances", 0),
            "counts": {k: counts.get(k, 0) for k in ("process", "destination", "dns", "listen")},
            "addresses": row["addresses"],
            "routes": row["routes"],
            "dropped": row.get("dropped") or 0,
            "auto_accept": row.get("auto_accept") or "off",
        }

    def detail(self, profile_id: int, resolve: Any = None) -> dict[str, Any]:
        """The summary plus every item, grouped by kind; destinations carry their service identity
        when `resolve` (discovery.Resolver) is given."""
        row = self.profile(profile_id)
        counts = self.store.profiles.item_summary([profile_id]).get(profile_id, {})
        out = self._summary(row, counts, time.time())
        accepted = row["accepted_at"]
        groups: dict[str, list[dict[str, Any]]] = {"process": [], "destination": [], "dns": [], "listen": []}
        for it in self.store.profiles.items([profile_id]):
            entry = {
                **it["facts"],
                "id": it["id"],
                "first_seen": it["first_seen"],
                "last_seen": it["last_seen"],
                "count": it["count"],
                "instances": it["instances"],
                "new_since_accept": accepted is not None and it["first_seen"] > accepted,
            }
            if it["kind"] == "destination" and resolve is not None:
                entry["service"] = resolve(it["facts"])
            groups.setdefault(it["kind"], []).append(entry)
        out.update(
            processes=groups["process"], destinations=groups["destination"], dns=groups["dns"],
            listening=groups["listen"],
        )  # fmt: skip
        return out

    # -- proposal ---------------------------------------------------------------------------------
    def proposal(self, profile_id: int) -> dict[str, Any]:
        """The rule the profile proposes (alert mode) and its diff against the rule the app has now."""
        row = self.profile(profile_id)
        policy = self.policies.runtime()
        current = select_rule_raw(policy, _identity(row))
        proposed = self.proposed_rule(row, current, effect="alert")
        return {
            "profile_id": profile_id,
            "rule": proposed.model_dump(mode="json"),
            "current": current.model_dump(mode="json") if current is not None else None,
            "diff": rule_diff(current, proposed),
            "policy_revision": policy.revision,
        }

    def proposed_rule(self, row: dict[str, Any], current: Rule | None, *, effect: str) -> Rule:
        items = self.store.profiles.items([row["id"]])
        exes = sorted({it["facts"]["exe"] for it in items if it["kind"] == "process"})
        names = {it["facts"]["name"] for it in items if it["kind"] == "dns"}
        targets: dict[tuple[str, str], set[int]] = {}
        for it in items:
            if it["kind"] != "destination":
                continue
            f = it["facts"]
            if f.get("names"):
                names.update(f["names"])  # allowed by name: pinning admits what the name resolves to
                if not ipaddress.ip_address(f["ip"]).is_loopback:
                    continue  # (the DNS allow-list never restricts loopback: that needs the address)
            targets.setdefault((_cidr(f["ip"]), f.get("protocol") or "tcp"), set()).add(int(f["port"]))
        listen = sorted({int(it["facts"]["port"]) for it in items if it["kind"] == "listen"})
        base = current or Rule(name="default")
        allow_net = [
            NetTarget(cidr=cidr, protocol=proto, ports=[PortRange(start=pt, end=pt) for pt in sorted(ports)])  # type: ignore[arg-type]
            for (cidr, proto), ports in sorted(targets.items())
        ]
        if not allow_net and not names:
            allow_net = [NOTHING_OUTBOUND]  # saw no outbound at all: an empty list would mean "any"
        listen_allow = [PortRange(start=pt, end=pt) for pt in listen] or [NOTHING_LISTENING]
        return Rule(
            name=rule_name(row["org"], row["space"], row["app"]),
            scope=app_scope(row["org"], row["space"], row["app"]),
            processes=ProcessControls(
                effect=effect,  # type: ignore[arg-type]
                allow=list(exes),
                deny=base.processes.deny,
                drift_prevention=base.processes.drift_prevention,
                fork_bomb_guard=base.processes.fork_bomb_guard,
            ),
            network=NetworkControls(
                effect=effect,  # type: ignore[arg-type]
                outbound=OutboundControls(allow=allow_net, deny=base.network.outbound.deny),
                listening=ListeningControls(allow=listen_allow, deny=base.network.listening.deny),
                port_scan=base.network.port_scan,
                bad_reputation_ips=base.network.bad_reputation_ips,
            ),
            dns=DnsControls(effect=effect, allow=sorted(names), deny=base.dns.deny),  # type: ignore[arg-type]
            cnaf=base.cnaf,
            privileges=base.privileges,
            fail_open=base.fail_open,
        )

    # -- review → enforce ---------------------------------------------------------------------------
    def start(
        self, org: str, space: str, app: str, user: str, *, window_hours: float, stable_hours: float,
        auto_accept: str = "off",
    ) -> tuple[dict[str, Any], RuntimePolicy]:
        """Put the app in learn mode: its own rule (first in the list) with every learnable control in
        `learn`, the other settings copied from the rule it had."""
        prof = self.store.profiles.ensure(
            org, space, app, window_hours=window_hours, stable_hours=stable_hours
        )
        policy = self.policies.runtime()
        current = select_rule_raw(policy, Identity(app_name=app, org=org, space=space))
        base = current or Rule(name="default")
        rule = base.model_copy(
            update={
                "name": rule_name(org, space, app),
                "scope": app_scope(org, space, app),
                "disabled": False,
                "processes": base.processes.model_copy(update={"effect": "learn", "allow": []}),
                "network": base.network.model_copy(
                    update={
                        "effect": "learn",
                        "outbound": base.network.outbound.model_copy(update={"allow": []}),
                        "listening": base.network.listening.model_copy(update={"effect": None, "allow": []}),
                    }
                ),
                "dns": base.dns.model_copy(update={"effect": "learn", "allow": []}),
            }
        )
        saved = self._save_rule(policy, rule, user)
        now = time.time()
        self.store.profiles.update(
            prof["id"], state="learning", learning_since=now, last_new_at=None, window_hours=window_hours,
            stable_hours=stable_hours, accepted_at=None, accepted_by="", accepted_revision=None,
            auto_accept=auto_accept,
        )  # fmt: skip
        self.store.mgmt.record(
            user, "learning.start", f"{org}/{space}/{app}",
            {"profile": prof["id"], "revision": saved.revision, "window_hours": window_hours,
             "stable_hours": stable_hours, "auto_accept": auto_accept},
        )  # fmt: skip
        return self.profile(prof["id"]), saved

    def accept(
        self, profile_id: int, user: str, expected_revision: int | None = None, *, auto: str = ""
    ) -> tuple[dict[str, Any], RuntimePolicy]:
        """The proposed rule goes into the policy in alert mode (replacing the app's learned rule);
        `auto`: accepted by the system (the profile's auto-accept: window or stable), said in the audit."""
        row = self.profile(profile_id)
        policy = self.policies.runtime()
        if expected_revision is not None and expected_revision != policy.revision:
            raise Conflict(
                f"the policy changed (revision {policy.revision}, the proposal was made at {expected_revision}): "
                "review the proposal again"
            )
        current = select_rule_raw(policy, _identity(row))
        rule = self.proposed_rule(row, current, effect="alert")
        if not (
            rule.processes.allow
            or rule.network.outbound.allow
            or rule.dns.allow
            or rule.network.listening.allow
        ):
            raise Conflict("the profile has seen nothing yet: there is no rule to accept")
        diff = rule_diff(current, rule)
        saved = self._save_rule(policy, rule, user)
        now = time.time()
        self.store.profiles.update(
            profile_id, state="accepted", accepted_at=now, accepted_by=user, accepted_revision=saved.revision
        )
        self.store.mgmt.record(
            user, "learning.accept", _target(row),
            {"profile": profile_id, "revision": saved.revision, "rule": rule.name, "effect": "alert", "diff": diff,
             **({"auto_accept": auto} if auto else {})},
        )  # fmt: skip
        return self.profile(profile_id), saved

    def set_auto_accept(self, profile_id: int, mode: str, user: str) -> dict[str, Any]:
        """Accept the proposal by itself (alert mode, never prevent) once the learning window has
        passed (`window`) or nothing new was seen for `stable_hours` (`stable`); `off`: an operator does."""
        row = self.profile(profile_id)
        if mode != "off" and row["state"] != "learning":
            raise Conflict(f"the profile is {row['state']}: auto-accept applies while it learns")
        self.store.profiles.update(profile_id, auto_accept=mode)
        self.store.mgmt.record(user, "learning.auto_accept", _target(row), {"profile": profile_id, "auto_accept": mode})
        return self.profile(profile_id)

    def auto_accept_due(self) -> list[RuntimePolicy]:
        """Accept (as `system`, alert mode) every learning profile whose auto-accept condition holds and
        that has seen something; returns the policies saved. Each profile is claimed first, so with
        several console replicas exactly one accepts it."""
        saved: list[RuntimePolicy] = []
        for s in self.summaries(state="learning"):
            mode = s["auto_accept"]
            due = (mode == "window" and s["window_elapsed"]) or (mode == "stable" and s["stable"])
            if not due or not any(s["counts"].values()):
                continue
            if not self.store.profiles.claim_auto_accept(s["id"], mode):
                continue
            try:
                saved.append(self.accept(s["id"], SYSTEM_USER, auto=mode)[1])
            except Conflict as exc:  # e.g. the resulting policy would be invalid: left to the operator (once)
                self.store.mgmt.record(SYSTEM_USER, "learning.auto_accept_failed", _target(s),
                                       {"profile": s["id"], "auto_accept": mode, "error": str(exc)[:500]})
        return saved

    def enforce(self, profile_id: int, user: str) -> tuple[dict[str, Any], RuntimePolicy]:
        """Switch the app's accepted rule from alert to prevent."""
        row = self.profile(profile_id)
        if row["state"] not in ("accepted", "enforcing"):
            raise Conflict(f"the profile is {row['state']}: accept its proposed rule first")
        policy = self.policies.runtime()
        name = rule_name(row["org"], row["space"], row["app"])
        rule = next((r for r in policy.rules if r.name == name), None)
        if rule is None:
            raise Conflict(f"the policy has no rule {name!r} any more: accept the proposal again")
        rule = rule.model_copy(
            update={
                "processes": rule.processes.model_copy(update={"effect": "prevent"}),
                "network": rule.network.model_copy(
                    update={
                        "effect": "prevent",
                        "listening": rule.network.listening.model_copy(update={"effect": None}),
                    }
                ),
                "dns": rule.dns.model_copy(update={"effect": "prevent"}),
            }
        )
        saved = self._save_rule(policy, rule, user)
        self.store.profiles.update(profile_id, state="enforcing")
        self.store.mgmt.record(
            user, "learning.enforce", _target(row),
            {"profile": profile_id, "revision": saved.revision, "rule": name, "effect": "prevent"},
        )  # fmt: skip
        return self.profile(profile_id), saved

    def _save_rule(self, policy: RuntimePolicy, rule: Rule, user: str) -> RuntimePolicy:
        """Replace the rule of the same name, or put it first (first match wins: an app-scoped rule
        must come before broader ones)."""
        rules = list(policy.rules)
        for i, r in enumerate(rules):
            if r.name == rule.name:
                rules[i] = rule
                break
        else:
            rules.insert(0, rule)
        try:
            new = RuntimePolicy(rules=rules)
        except ValueError as exc:
            raise Conflict(f"the resulting policy would be invalid: {exc}") from None
        return self.policies.put_runtime(new, user)


def _identity(row: dict[str, Any]) -> Identity:
    return Identity(app_name=row["app"], org=row["org"], space=row["space"])


def _target(row: dict[str, Any]) -> str:
    return f"{row['org']}/{row['space']}/{row['app']}"


def _cidr(ip: str) -> str:
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


_LISTS = (
    "processes.allow", "processes.deny", "network.outbound.allow", "network.outbound.deny",
    "network.listening.allow", "network.listening.deny", "dns.allow", "dns.deny",
)  # fmt: skip
_SCALARS = (
    "processes.effect",
    "network.effect",
    "network.listening.effect",
    "dns.effect",
    "processes.drift_prevention",
)


def _get(d: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        d = d.get(part) if isinstance(d, dict) else None  # type: ignore[assignment]
    return d


def _show(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def rule_diff(current: Rule | None, proposed: Rule) -> list[dict[str, Any]]:
    """Per control: entries added and removed, effects changed (the current rule may be broader)."""
    cur = current.model_dump(mode="json") if current is not None else {}
    new = proposed.model_dump(mode="json")
    out: list[dict[str, Any]] = []
    if current is None or current.name != proposed.name:
        out.append({"path": "rule", "from": current.name if current else None, "to": proposed.name})
    for path in _SCALARS:
        a, b = _get(cur, path), _get(new, path)
        if a != b:
            out.append({"path": path, "from": a, "to": b})
    for path in _LISTS:
        a = {_show(v) for v in _get(cur, path) or []}
        b = {_show(v) for v in _get(new, path) or []}
        if a != b:
            out.append({"path": path, "added": sorted(b - a), "removed": sorted(a - b)})
    return out
