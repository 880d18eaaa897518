"""Node.js Security WG advisories (nodejs/security-wg `vuln/npm` and `vuln/core`) as OSV-shaped records.

npm advisories name a module and npm semver ranges (`vulnerable_versions`, `patched_versions`); core
advisories name ranges of the `node` runtime itself. Ranges are kept verbatim in an `NPM_SEMVER`
range that `match.py` evaluates with node-semver's own semantics (`||`, hyphen and x-ranges, `^`, `~`,
spaces after operators), as `npm audit` does; OSV events cannot express `^4.8.4 || ^6.11.1` exactly.
"""

from __future__ import annotations

from typing import Any

SOURCE = "nodejs-security-wg"
NODE_ECOSYSTEM = "Node.js"  # the runtime: package "node", version of the node binary
NODE_PACKAGE = "node"


def is_npm_advisory(doc: dict[str, Any]) -> bool:
    return "module_name" in doc and "vulnerable_versions" in doc


def is_core_advisory(doc: dict[str, Any]) -> bool:
    return "vulnerable" in doc and ("patched" in doc or "cve" in doc)


def is_index(doc: dict[str, Any]) -> bool:
    """`index.json`: every advisory of the folder keyed by its number."""
    return bool(doc) and all(k.isdigit() and isinstance(v, dict) for k, v in doc.items())


def _range(vulnerable: Any, patched: Any) -> dict[str, Any]:
    return {
        "type": "NPM_SEMVER",
        "vulnerable": str(vulnerable) if vulnerable not in (None, "") else "*",
        "patched": str(patched) if patched not in (None, "") else "",
    }


def npm_to_osv(doc: dict[str, Any]) -> dict[str, Any]:
    name = str(doc.get("module_name") or "").strip()
    if not name:
        raise ValueError("Node.js WG advisory without module_name")
    num = doc.get("id")
    if num in (None, ""):
        raise ValueError("Node.js WG npm advisory without id")
    cves = [str(c) for c in doc.get("cves") or [] if c]
    return {
        "id": f"NSWG-ECO-{num}",
        "aliases": cves,
        "modified": str(doc.get("updated_at") or doc.get("publish_date") or ""),
        "summary": str(doc.get("title") or doc.get("overview") or ""),
        "affected": [
            {
                "package": {"ecosystem": "npm", "name": name},
                "ranges": [_range(doc.get("vulnerable_versions"), doc.get("patched_versions"))],
            }
        ],
        "database_specific": {
            "cvss_vector": doc.get("cvss_vector"),
            "cvss_score": doc.get("cvss_score"),
        },
        "_source": SOURCE,
        "_label": f"{SOURCE}:npm",
    }


def core_to_osv(doc: dict[str, Any], number: str) -> dict[str, Any]:
    cves = [str(c) for c in doc.get("cve") or [] if c]
    return {
        "id": f"NSWG-CORE-{number}",
        "aliases": cves,
        "modified": "",
        "summary": str(doc.get("description") or doc.get("overview") or "")[:300],
        "affected": [
            {
                "package": {"ecosystem": NODE_ECOSYSTEM, "name": NODE_PACKAGE},
                "ranges": [_range(doc.get("vulnerable"), doc.get("patched"))],
            }
        ],
        "database_specific": {
            "cvss": doc.get("cvss"),
            "cvss_score": doc.get("cvss_score"),
            "severity": doc.get("severity"),
        },
        "_source": SOURCE,
        "_label": f"{SOURCE}:core",
    }
