"""SARIF 2.1.0 output so code-scanning UIs can show vulnerabilities, secrets and malware as results."""

from __future__ import annotations

import json
from typing import Any

from garrison import __version__
from garrison.scan.model import ScanReport, Severity

SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
_LEVEL = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.UNKNOWN: "warning",
}


def _location(path: str, line: int | None = None, purl: str = "") -> dict[str, Any]:
    """File and line where known. A path inside an archive (`outer.jar!/inner.zip!/file`) points at
    the outer file, with the full path as a logical location (a line there would be the inner file's);
    a package without a line also names its SBOM component (purl) as a logical location."""
    outer, sep, _inner = path.partition("!/")
    phys: dict[str, Any] = {"artifactLocation": {"uri": outer or "."}}
    if line and not sep:
        phys["region"] = {"startLine": line}
    loc: dict[str, Any] = {"physicalLocation": phys}
    logical: list[dict[str, Any]] = []
    if sep:
        logical.append({"fullyQualifiedName": path, "kind": "member"})
    if purl:
        logical.append({"fullyQualifiedName": purl, "kind": "package"})
    if logical:
        loc["logicalLocations"] = logical
    return loc


def render_sarif(report: ScanReport) -> str:
    rules: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    for v in report.vulnerabilities:
        rules.setdefault(
            v.id,
            {
                "id": v.id,
                "shortDescription": {"text": v.summary or v.id},
                "helpUri": f"https://osv.dev/vulnerability/{v.id}",
                "properties": {
                    "security-severity": f"{v.cvss_score:.1f}" if v.cvss_score is not None else "0.0",
                    "aliases": v.aliases,
                },
            },
        )
        fix = f"; fixed in {', '.join(v.fixed_versions)}" if v.fixed_versions else ""
        result: dict[str, Any] = {
            "ruleId": v.id,
            "level": _LEVEL[v.severity],
            "message": {"text": f"{v.package} {v.version} ({v.ecosystem}) is affected by {v.id}{fix}"},
            "locations": [_location(loc, v.lines.get(loc), v.purl) for loc in v.locations[:10]]
            or [_location(".", None, v.purl)],
        }
        if v.waiver is not None:
            expiry = f" (expires {v.waiver.expires})" if v.waiver.expires else ""
            result["suppressions"] = [
                {
                    "kind": "external",
                    "status": "accepted",
                    "justification": f"{v.waiver.exception}: {v.waiver.reason}{expiry}",
                }
            ]
        results.append(result)
    for s in report.secrets:
        rid = "secret/" + s.kind.lower().replace(" ", "-")
        rules.setdefault(rid, {"id": rid, "shortDescription": {"text": f"{s.kind} in a file"}})
        results.append(
            {
                "ruleId": rid,
                "level": "error",
                "message": {"text": f"{s.kind} found (value redacted, fingerprint {s.fingerprint})"},
                "locations": [_location(s.path, s.line)],
            }
        )
    for m in report.malware:
        rid = "malware/" + m.rule
        rules.setdefault(rid, {"id": rid, "shortDescription": {"text": f"Malware indicator {m.rule}"}})
        results.append(
            {
                "ruleId": rid,
                "level": "error",
                "message": {"text": f"file matches {m.rule} (sha256 {m.sha256})"},
                "locations": [_location(m.path)],
            }
        )
    doc = {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "garrison-scan",
                        "version": __version__,
                        "informationUri": "https://github.com/garrison",
                        "rules": list(rules.values()),
                    }
                },
                "results": results,
                "properties": {
                    "digest": report.digest,
                    "verdict": report.verdict,
                    "reasons": report.reasons,
                    "warnings": report.warnings,
                },
            }
        ],
    }
    return json.dumps(doc, indent=2)
