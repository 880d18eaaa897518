"""RubySec advisory-db YAML (gem/patched_versions/unaffected_versions) as an OSV-shaped record.

RubyGems requirement strings (`~> 5.2.4, >= 5.2.4.3`) do not map onto OSV event lists without loss,
so they are kept verbatim in a `RUBYGEMS_REQUIREMENTS` range that `match.py` evaluates directly.
"""

from __future__ import annotations

from typing import Any

from garrison.scan.vulndb.versions import parse


def rubysec_to_osv(doc: dict[str, Any], source: str) -> dict[str, Any]:
    gem = str(doc.get("gem") or "")
    if not gem:
        raise ValueError("RubySec advisory without 'gem'")
    aliases: list[str] = []
    if doc.get("cve"):
        aliases.append(f"CVE-{doc['cve']}")
    if doc.get("ghsa"):
        aliases.append(f"GHSA-{doc['ghsa']}")
    if doc.get("osvdb"):
        aliases.append(f"OSVDB-{doc['osvdb']}")
    if not aliases:
        raise ValueError("RubySec advisory without cve/ghsa/osvdb identifier")
    ident = aliases[0]
    score = doc.get("cvss_v3") or doc.get("cvss_v4") or doc.get("cvss_v2")
    return {
        "id": ident,
        "aliases": aliases[1:],
        "modified": str(doc.get("date") or ""),
        "summary": str(doc.get("title") or ""),
        "affected": [
            {
                "package": {"ecosystem": "RubyGems", "name": gem},
                "ranges": [
                    {
                        "type": "RUBYGEMS_REQUIREMENTS",
                        "patched": [str(x) for x in doc.get("patched_versions") or []],
                        "unaffected": [str(x) for x in doc.get("unaffected_versions") or []],
                    }
                ],
            }
        ],
        "database_specific": {"cvss_score": float(score) if score is not None else None, "source": source},
        "_source": "rubysec",
        "_label": "rubysec",
    }


def _bump(text: str) -> str:
    """`~> 5.2.4` upper bound: drop the last segment and increment the one before (5.3)."""
    segs = [s for s in text.split(".") if s]
    nums: list[str] = []
    for s in segs:
        if not s.isdigit():
            break
        nums.append(s)
    if len(nums) > 1:
        nums = nums[:-1]
    nums[-1] = str(int(nums[-1]) + 1)
    return ".".join(nums)


def satisfies(version: str, requirement: str) -> bool:
    """True when `version` meets every comma-separated clause of a RubyGems requirement string."""
    v = parse("RubyGems", version)
    if v is None:
        return False
    for clause in requirement.split(","):
        clause = clause.strip()
        if not clause:
            continue
        op = "="
        for cand in ("~>", ">=", "<=", "!=", ">", "<", "="):
            if clause.startswith(cand):
                op, clause = cand, clause[len(cand) :].strip()
                break
        r = parse("RubyGems", clause)
        if r is None:
            return False
        ok = {
            "=": v == r,
            "!=": v != r,
            ">": v > r,
            "<": v < r,
            ">=": v >= r,
            "<=": v <= r,
        }.get(op)
        if op == "~>":
            upper = parse("RubyGems", _bump(clause))
            ok = v >= r and (upper is None or v < upper)
        if not ok:
            return False
    return True
