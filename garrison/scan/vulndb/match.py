"""Match packages against the index with the OSV algorithm; fold aliased advisories into one finding."""

from __future__ import annotations

from typing import Any

from garrison.scan.model import Package, Severity, VulnerabilityFinding
from garrison.scan.vulndb.index import VulnIndex
from garrison.scan.vulndb.npm_semver import in_range, lower_bounds
from garrison.scan.vulndb.rubysec import satisfies
from garrison.scan.vulndb.versions import base_ecosystem, parse


def _ecosystem_applies(pkg_eco: str, adv_eco: str) -> bool:
    """`Debian:12` advisories apply to Debian 12 packages; a bare `Debian` applies to every release."""
    if ":" not in adv_eco or ":" not in pkg_eco:
        return base_ecosystem(pkg_eco) == base_ecosystem(adv_eco)
    return adv_eco == pkg_eco or adv_eco.startswith(pkg_eco + ":")


def _in_range(eco: str, version: str, rng: dict[str, Any]) -> tuple[bool, list[str]]:
    """OSV spec range evaluation; returns (affected, fixed versions above `version` in this range)."""
    rtype = str(rng.get("type", "ECOSYSTEM"))
    if rtype == "GIT":
        return False, []
    if rtype == "NPM_SEMVER":
        npm_patched = str(rng.get("patched") or "")
        if not in_range(version, str(rng.get("vulnerable") or "")) or in_range(version, npm_patched):
            return False, []
        # the nearest patched version above this one (`^20.20.0 || ^22.22.0` for 20.19.0: 20.20.0)
        v = parse("npm", version)
        above = [
            (p, b)
            for b in lower_bounds(npm_patched)
            if (p := parse("npm", b)) is not None and (v is None or p > v)
        ]
        return True, [min(above)[1]] if above else []
    if rtype == "RUBYGEMS_REQUIREMENTS":
        patched = rng.get("patched") or []
        unaffected = rng.get("unaffected") or []
        if any(satisfies(version, r) for r in patched) or any(satisfies(version, r) for r in unaffected):
            return False, []
        fixes = [c.strip()[2:].strip() for r in patched for c in r.split(",") if c.strip().startswith(">=")]
        return True, fixes
    v = parse(eco, version, rtype)
    if v is None:
        return False, []
    events: list[tuple[Any, str, str]] = []
    for ev in rng.get("events") or []:
        for kind in ("introduced", "fixed", "last_affected", "limit"):
            if kind in ev:
                raw = str(ev[kind])
                if kind == "introduced" and raw == "0":
                    events.append((None, kind, raw))
                    continue
                pv = parse(eco, raw, rtype)
                if pv is not None:
                    events.append((pv, kind, raw))
    # introduced "0" sorts first; the rest by the ecosystem's version order
    zero = [e for e in events if e[0] is None]
    ordered = zero + sorted((e for e in events if e[0] is not None), key=lambda e: e[0])
    affected = False
    for pv, kind, _raw in ordered:
        if kind == "introduced" and (pv is None or v >= pv):
            affected = True
        elif (kind == "fixed" and v >= pv) or (kind == "last_affected" and v > pv):
            affected = False
    for pv, kind, _raw in events:
        if kind == "limit" and v >= pv:
            affected = False
    fixes = [raw for pv, kind, raw in events if kind == "fixed" and pv is not None and pv > v]
    return affected, fixes


def is_affected(eco: str, version: str, data: dict[str, Any]) -> tuple[bool, list[str]]:
    """True when `version` is listed in `versions[]` or falls inside any range."""
    fixes: list[str] = []
    hit = version in (data.get("versions") or [])
    for rng in data.get("ranges") or []:
        ok, f = _in_range(eco, version, rng)
        if ok:
            hit = True
            fixes.extend(f)
    if not hit and base_ecosystem(eco) in ("Go",) and version.startswith("v"):
        return is_affected(eco, version[1:], data)
    return hit, fixes


def _sort_key(v: str, eco: str) -> tuple[int, Any]:
    p = parse(eco, v)
    return (0, p) if p is not None else (1, v)


def match_packages(index: VulnIndex, packages: list[Package]) -> list[VulnerabilityFinding]:
    """All findings for `packages`, one per (package, advisory group) — aliases are de-duplicated."""
    findings: list[VulnerabilityFinding] = []
    adv_cache: dict[int, dict[str, Any] | None] = {}
    for pkg in packages:
        hits: dict[int, list[str]] = {}
        for adv_eco, pk, data in index.candidates(pkg.ecosystem, pkg.name):
            if not _ecosystem_applies(pkg.ecosystem, adv_eco):
                continue
            ok, fixes = is_affected(adv_eco, pkg.version, data)
            if ok:
                hits.setdefault(pk, []).extend(fixes)
        groups: list[tuple[set[str], list[str], list[str]]] = []  # (id set, ids in order, fixes)
        by_id: dict[str, dict[str, Any]] = {}
        for pk, fixes in hits.items():
            if pk not in adv_cache:
                adv_cache[pk] = index.advisory(pk)
            adv = adv_cache[pk]
            if adv is None:
                continue
            ident = adv["id"]
            prev = by_id.get(ident)
            if prev is None or (adv.get("score") or -1) > (prev.get("score") or -1):
                by_id[ident] = adv
            names = {ident, *(adv.get("aliases") or [])}
            merged = [g for g in groups if g[0] & names]
            if merged:
                target = merged[0]
                for other in merged[1:]:
                    target[0].update(other[0])
                    target[1].extend(other[1])
                    target[2].extend(other[2])
                    groups.remove(other)
                target[0].update(names)
                target[1].append(ident)
                target[2].extend(fixes)
            else:
                groups.append((set(names), [ident], list(fixes)))
        for names, ids, fixes in groups:
            advs: list[dict[str, Any]] = [a for i in dict.fromkeys(ids) if (a := by_id.get(i))]
            best = max(advs, key=lambda a: (Severity(a["severity"]).rank, a.get("score") or -1), default=None)
            primary = sorted(ids, key=lambda i: (i.startswith("CVE-"), i))[0]
            summary = next((a["summary"] for a in advs if a.get("summary")), "")
            findings.append(
                VulnerabilityFinding(
                    id=primary,
                    aliases=sorted(names - {primary}),
                    sources=sorted({str(a.get("source")) for a in advs if a.get("source")}),
                    ecosystem=pkg.ecosystem,
                    package=pkg.name,
                    version=pkg.version,
                    fixed_versions=sorted(set(fixes), key=lambda v: _sort_key(v, pkg.ecosystem)),
                    severity=Severity(best["severity"]) if best else Severity.UNKNOWN,
                    cvss_score=best.get("score") if best else None,
                    cvss_vector=best.get("vector") if best else None,
                    summary=summary,
                    locations=pkg.locations,
                )
            )
    findings.sort(key=lambda f: (-f.severity.rank, f.package, f.id))
    return findings
