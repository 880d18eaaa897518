"""Network discovery map: apps and the destinations they reach, each named by its service identity,
and allow/deny rule entries made from selected edges or nodes.

A destination is shown as what it is, not as a bare IP: another CF app (one of its instances' own
addresses and a port it listens on, or an `apps.internal` route of it), a CF route of an app, a DNS
name the app resolved to reach it, or an external host. Flags come from the shared evaluator:
`denied_by_current_policy` decides each observed connection with the rule the app has now;
`new_since_accept` marks what was first seen after the app's profile was accepted.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

from garrison.console.services.errors import Conflict, NotFound
from garrison.console.services.learning import LearningService, app_scope, rule_name
from garrison.console.store.open import Store
from garrison.policy.evaluate import decide_connect
from garrison.policy.model import NetTarget, PortRange, Rule, RuntimePolicy
from garrison.policy.scope import Identity, select_rule, select_rule_raw

MAX_ENDPOINTS_PER_EDGE = 32
AppKey = tuple[str, str, str]


def app_node_id(org: str, space: str, app: str) -> str:
    return f"app:{org}/{space}/{app}"


class Resolver:
    """Destination facts → service identity, from what the console knows of every app's instances
    (the addresses and routes their defenders reported, the ports they listen on).
    The address a defender connects to the console from is not used: in CF that is the cell's."""

    def __init__(self, store: Store, profiles: list[dict[str, Any]]) -> None:
        self.by_route: dict[str, AppKey] = {}
        self.by_addr: dict[str, list[tuple[AppKey, set[int]]]] = {}
        ports: dict[int, set[int]] = {}
        for it in store.profiles.items([p["id"] for p in profiles], kind="listen"):
            ports.setdefault(it["profile_id"], set()).add(int(it["facts"]["port"]))
        for prof in profiles:
            key = (prof["org"], prof["space"], prof["app"])
            for route in prof["routes"] or []:
                self.by_route.setdefault(route.split("/", 1)[0].lower(), key)
            for addr in prof["addresses"] or []:
                self.by_addr.setdefault(addr, []).append((key, ports.get(prof["id"], set())))

    def __call__(self, facts: dict[str, Any]) -> dict[str, Any]:
        ip, port = str(facts.get("ip", "")), int(facts.get("port") or 0)
        names = [n.lower() for n in facts.get("names") or []]
        # an instance's own address and a port it listens on is the most precise: names pinned to an
        # address can be shared (a router's address carries every route; loopback in tests)
        cands = self.by_addr.get(ip, [])
        listening = {k for k, ports in cands if port in ports}
        if len(listening) == 1:
            return _app_service(listening.pop(), "app", via=f"{ip}:{port}")
        for n in names:
            hit = self.by_route.get(n)
            if hit is not None:
                kind = "app" if n.endswith(".apps.internal") else "route"
                return _app_service(hit, kind, via=n)
        if not listening and len({k for k, _ in cands}) == 1:
            return _app_service(cands[0][0], "app", via=f"{ip}:{port}")
        if names:
            return {"kind": "dns", "name": names[0], "label": names[0], "id": f"dns:{names[0]}"}
        return {"kind": "external", "ip": ip, "label": ip, "id": f"ip:{ip}", "scope": _ip_scope(ip)}


def _app_service(key: AppKey, kind: str, via: str) -> dict[str, Any]:
    org, space, app = key
    return {
        "kind": kind, "org": org, "space": space, "app": app, "via": via,
        "label": f"{org}/{space}/{app}", "id": app_node_id(org, space, app),
    }  # fmt: skip


def _ip_scope(ip: str) -> str:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return "unknown"
    return "loopback" if a.is_loopback else "private" if a.is_private else "public"


@dataclass
class _Edge:
    source: str
    target: str
    app: AppKey
    ports: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    count: int = 0
    first_seen: float = float("inf")
    last_seen: float = 0.0
    new_since_accept: bool = False
    denied: bool = False
    denied_effect: str | None = None
    endpoints: list[dict[str, Any]] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {
            "id": f"{self.source}->{self.target}",
            "source": self.source,
            "target": self.target,
            "ports": sorted(self.ports, key=lambda s: (int(s.split("/")[0]), s)),
            "names": sorted(self.names),
            "count": self.count,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "new_since_accept": self.new_since_accept,
            "denied_by_current_policy": self.denied,
            "denied_effect": self.denied_effect,
            "endpoints": self.endpoints[:MAX_ENDPOINTS_PER_EDGE],
        }


class DiscoveryService:
    def __init__(self, store: Store, learning: LearningService) -> None:
        self.store = store
        self.learning = learning

    def resolver(self) -> Resolver:
        return Resolver(self.store, self.store.profiles.list(limit=100_000))

    def _edges(
        self, rows: list[dict[str, Any]], resolve: Resolver, policy: RuntimePolicy
    ) -> dict[str, _Edge]:
        edges: dict[str, _Edge] = {}
        by_id = {r["id"]: r for r in rows}
        rules: dict[int, Rule | None] = {
            r["id"]: select_rule(policy, Identity(app_name=r["app"], org=r["org"], space=r["space"]))
            for r in rows
        }
        for it in self.store.profiles.items(list(by_id), kind="destination"):
            prof = by_id[it["profile_id"]]
            f = it["facts"]
            svc = resolve(f)
            src = app_node_id(prof["org"], prof["space"], prof["app"])
            e = edges.get(f"{src}->{svc['id']}")
            if e is None:
                e = edges[f"{src}->{svc['id']}"] = _Edge(
                    src, svc["id"], (prof["org"], prof["space"], prof["app"])
                )
            proto = f.get("protocol") or "tcp"
            e.ports.add(f"{f['port']}/{proto}")
            e.names.update(f.get("names") or [])
            e.count += int(it["count"])
            e.first_seen = min(e.first_seen, it["first_seen"])
            e.last_seen = max(e.last_seen, it["last_seen"])
            if prof["accepted_at"] is not None and it["first_seen"] > prof["accepted_at"]:
                e.new_since_accept = True
            d = decide_connect(
                rules[prof["id"]], f["ip"], int(f["port"]), proto, pinned_names=list(f.get("names") or [])
            )
            if d.violation:
                e.denied = True
                if e.denied_effect != "prevent":
                    e.denied_effect = d.effect
            e.endpoints.append(
                {"ip": f["ip"], "port": f["port"], "protocol": proto, "names": f.get("names") or [],
                 "count": it["count"], "last_seen": it["last_seen"], "denied": d.violation}
            )  # fmt: skip
        return edges

    def graph(
        self,
        *,
        org: str | None = None,
        space: str | None = None,
        app: str | None = None,
        since: float | None = None,
        flagged: bool = False,
        q: str | None = None,
        limit: int = 5000,
    ) -> dict[str, Any]:
        everyone = self.store.profiles.list(limit=100_000)
        rows = [r for r in everyone if (not org or r["org"] == org) and (not space or r["space"] == space)
                and (not app or r["app"] == app)]  # fmt: skip
        resolve = Resolver(self.store, everyone)
        policy = self.learning.policies.runtime()
        edges = list(self._edges(rows, resolve, policy).values())
        if since is not None:
            edges = [e for e in edges if e.last_seen >= since]
        if flagged:
            edges = [e for e in edges if e.new_since_accept or e.denied]
        nodes: dict[str, dict[str, Any]] = {}
        by_key = {(r["org"], r["space"], r["app"]): r for r in everyone}
        for r in rows:
            nodes[app_node_id(r["org"], r["space"], r["app"])] = _app_node(r)
        # target nodes: apps (with a profile or not) and destinations
        svc_of: dict[str, dict[str, Any]] = {}
        for e in edges:
            if e.target in svc_of:
                continue
            ep = e.endpoints[0]
            svc_of[e.target] = resolve(ep)
        for tid, svc in svc_of.items():
            if tid in nodes:
                continue
            if svc["kind"] in ("app", "route"):
                key = (svc["org"], svc["space"], svc["app"])
                nodes[tid] = _app_node(by_key[key]) if key in by_key else {
                    "id": tid, "kind": "app", "label": svc["app"], "org": svc["org"], "space": svc["space"],
                    "app": svc["app"], "group": f"{svc['org']}/{svc['space']}", "profile_id": None, "state": None,
                }  # fmt: skip
            else:
                nodes[tid] = {"id": tid, "kind": svc["kind"], "label": svc["label"], "service": svc}
        if q:
            ql = q.lower()
            keep = {n["id"] for n in nodes.values() if ql in n["label"].lower() or ql in n["id"].lower()}
            edges = [e for e in edges if e.source in keep or e.target in keep]
            used = {e.source for e in edges} | {e.target for e in edges}
            nodes = {k: v for k, v in nodes.items() if k in used or k in keep}
        edges.sort(key=lambda e: (-e.last_seen, e.source, e.target))
        truncated = len(edges) > limit
        edges = edges[:limit]
        groups: dict[str, dict[str, list[str]]] = {}
        for n in nodes.values():
            if n["kind"] == "app":
                groups.setdefault(n["org"], {}).setdefault(n["space"], []).append(n["id"])
        return {
            "generated_at": time.time(),
            "policy_revision": policy.revision,
            "nodes": sorted(nodes.values(), key=lambda n: (n["kind"] != "app", n["id"])),
            "edges": [e.json() for e in edges],
            "groups": [
                {"org": o, "spaces": [{"space": s, "apps": sorted(ids)} for s, ids in sorted(sp.items())]}
                for o, sp in sorted(groups.items())
            ],
            "truncated": truncated,
        }

    # -- rules from the map -----------------------------------------------------------------------
    def rules_from_selection(
        self, action: str, edge_ids: list[str], node_ids: list[str], user: str
    ) -> dict[str, Any]:
        """Allow or deny what the selected edges (and every edge of the selected nodes) carry, in the
        rule of each source app (its learned/app rule, made from the rule it has now if it has none)."""
        everyone = self.store.profiles.list(limit=100_000)
        policy = self.learning.policies.runtime()
        edges = self._edges(everyone, Resolver(self.store, everyone), policy)
        wanted_nodes = set(node_ids)
        chosen = [
            e
            for eid, e in edges.items()
            if eid in set(edge_ids) or e.source in wanted_nodes or e.target in wanted_nodes
        ]
        unknown = sorted(set(edge_ids) - set(edges))
        if unknown:
            raise NotFound(f"no such edge: {unknown[0]}")
        if not chosen:
            raise Conflict("the selection holds no observed connection")
        rules = list(policy.rules)
        changes: dict[AppKey, dict[str, set[str]]] = {}
        for e in chosen:
            idx = _app_rule(rules, e.app)
            rule = rules[idx]
            ch = changes.setdefault(e.app, {"names": set(), "targets": set()})
            names = {n for ep in e.endpoints for n in ep["names"]}
            targets = [ep for ep in e.endpoints if not ep["names"] or action == "deny"]
            rules[idx] = _with_entries(rule, action, names, targets)
            ch["names"] |= names
            ch["targets"] |= {f"{ep['ip']}:{ep['port']}/{ep['protocol']}" for ep in targets}
        try:
            saved = self.learning.policies.put_runtime(RuntimePolicy(rules=rules), user)
        except ValueError as exc:
            raise Conflict(f"the resulting policy would be invalid: {exc}") from None
        detail = [
            {"org": k[0], "space": k[1], "app": k[2], "rule": rule_name(*k), "action": action,
             "dns": sorted(v["names"]), "outbound": sorted(v["targets"])}
            for k, v in sorted(changes.items())
        ]  # fmt: skip
        self.store.mgmt.record(
            user, f"discovery.{action}", ", ".join(f"{d['org']}/{d['space']}/{d['app']}" for d in detail),
            {"revision": saved.revision, "changes": detail, "edges": sorted({e.source + "->" + e.target for e in chosen})},
        )  # fmt: skip
        return {"revision": saved.revision, "changes": detail}


def _app_node(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": app_node_id(r["org"], r["space"], r["app"]), "kind": "app", "label": r["app"], "org": r["org"],
        "space": r["space"], "app": r["app"], "group": f"{r['org']}/{r['space']}", "profile_id": r["id"],
        "state": r["state"],
    }  # fmt: skip


def _app_rule(rules: list[Rule], key: AppKey) -> int:
    """Index of the app's own rule; one is made first in the list (from the rule it has now)."""
    name = rule_name(*key)
    for i, r in enumerate(rules):
        if r.name == name:
            return i
    current = select_rule_raw(RuntimePolicy(rules=rules), Identity(app_name=key[2], org=key[0], space=key[1]))
    base = current or Rule(name=name)
    rules.insert(0, base.model_copy(update={"name": name, "scope": app_scope(*key), "disabled": False}))
    return 0


def _with_entries(rule: Rule, action: str, names: set[str], endpoints: list[dict[str, Any]]) -> Rule:
    targets = [
        NetTarget(
            cidr=f"{ep['ip']}/128" if ":" in ep["ip"] else f"{ep['ip']}/32",
            ports=[PortRange(start=int(ep["port"]), end=int(ep["port"]))],
            protocol=ep["protocol"] if ep["protocol"] in ("tcp", "udp") else "any",
        )
        for ep in endpoints
    ]
    into, away = ("allow", "deny") if action == "allow" else ("deny", "allow")
    out, dns = rule.network.outbound, rule.dns
    out = out.model_copy(update=_moved(getattr(out, into), getattr(out, away), targets, into, away))
    dns = dns.model_copy(update=_moved(getattr(dns, into), getattr(dns, away), sorted(names), into, away))
    return rule.model_copy(update={"network": rule.network.model_copy(update={"outbound": out}), "dns": dns})


def _moved(to: list[Any], frm: list[Any], items: list[Any], into: str, away: str) -> dict[str, list[Any]]:
    """`items` added to the `into` list and taken out of the `away` list (allow ↔ deny)."""
    return {into: _extend(to, items), away: [x for x in frm if x not in items]}


def _extend(old: list[Any], new: list[Any]) -> list[Any]:
    out = list(old)
    for v in new:
        if v not in out:
            out.append(v)
    return out
