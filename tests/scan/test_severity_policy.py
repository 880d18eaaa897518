"""Severity from every source, what the policy says unknown means, waived findings marked in every
report format, and SARIF regions: with the real-format advisories and real package metadata."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from garrison.scan.assurance import AssurancePolicy
from garrison.scan.model import Severity
from garrison.scan.report import render
from garrison.scan.scanner import ScanOptions, scan
from garrison.scan.vulndb.index import VulnIndex
from tests.scan.helpers import dist_info, go_binary_inline, go_modinfo, make_droplet


@pytest.fixture(scope="module")
def django_droplet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("django")
    return make_droplet(
        d / "django.tgz",
        {
            **dist_info("Django", "2.2.0"),
            **dist_info("requests", "2.31.0"),
            "app/requirements.txt": "# web\nrequests==2.31.0\nDjango==2.2.0\n",
            "app/bin/api": go_binary_inline(
                "go1.21.1", go_modinfo("example.com/api", [("golang.org/x/net", "v0.7.0")])
            ),
        },
    )


def _scan(droplet: Path, db: Path, policy: dict[str, object]) -> object:
    return scan(droplet, ScanOptions(db_dir=db, policy=AssurancePolicy.model_validate(policy)))


def test_every_severity_source_is_used(advisory_db: Path) -> None:
    with VulnIndex(advisory_db) as ix:
        rows = dict(ix.conn.execute("SELECT id, severity FROM advisory").fetchall())
    assert rows["PYSEC-2023-221"] == "high"  # OSV severity[] CVSS v3 vector, scored here
    assert rows["GARRISON-TEST-CVSS4"] == "high"  # OSV CVSS v4 vector only, scored by `cvss`
    assert rows["CVE-2023-50725"] == "medium"  # RubySec cvss_v3 score
    assert rows["NSWG-ECO-311"] == "critical"  # Node.js WG cvss_vector
    assert rows["NSWG-CORE-158"] == "low"  # Node.js core label only
    assert rows["PYSEC-2019-13"] == "unknown" and rows["GO-2023-2102"] == "unknown"  # none in the data


def test_unknown_severity_with_a_fix_fails_by_default(django_droplet: Path, advisory_db: Path) -> None:
    report = _scan(django_droplet, advisory_db, {})
    assert report.verdict == "fail"  # type: ignore[attr-defined]
    unknown = [v for v in report.vulnerabilities if v.severity is Severity.UNKNOWN]  # type: ignore[attr-defined]
    assert {v.id for v in unknown} >= {"PYSEC-2019-13", "GO-2023-2102"}
    text = " ".join(report.reasons)  # type: ignore[attr-defined]
    assert "unknown severity with a fix available" in text and "PYSEC-2019-13 in Django 2.2.0" in text
    # a requests advisory rated high does not fail a policy that blocks critical only
    assert "GARRISON-TEST-CVSS4" not in text


def test_unknown_severity_warn_and_ignore(django_droplet: Path, advisory_db: Path) -> None:
    warn = _scan(django_droplet, advisory_db, {"unknown_severity": "warn"})
    assert warn.verdict == "pass" and any("unknown severity" in w for w in warn.warnings)  # type: ignore[attr-defined]
    ignore = _scan(django_droplet, advisory_db, {"unknown_severity": "ignore"})
    assert ignore.verdict == "pass" and ignore.warnings == []  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown_severity"):
        AssurancePolicy.model_validate({"unknown_severity": "maybe"})


def test_waived_findings_are_marked_in_every_format(django_droplet: Path, advisory_db: Path) -> None:
    policy = {
        "vulnerability_exceptions": [
            {"id": "CVE-2019-14234", "reason": "JSONField unused", "expires": "2099-01-01"},
            {"id": "GO-2023-2102", "reason": "old waiver", "expires": "2020-01-01"},
        ],
        "package_exceptions": [{"name": "requests", "reason": "internal calls only"}],
        "unknown_severity": "fail",
    }
    report = _scan(django_droplet, advisory_db, policy)
    by_id = {v.id: v for v in report.vulnerabilities}  # type: ignore[attr-defined]
    w = by_id["PYSEC-2019-13"].waiver
    assert w is not None and w.exception == "vulnerability:CVE-2019-14234" and w.expires == date(2099, 1, 1)
    assert by_id["GARRISON-TEST-CVSS4"].waiver.exception == "package:requests"
    assert by_id["GO-2023-2102"].waiver is None  # expired: counts again, and says so
    assert any("expired" in x and "GO-2023-2102" in x for x in report.warnings)  # type: ignore[attr-defined]
    assert report.verdict == "fail" and "GO-2023-2102" in " ".join(report.reasons)  # type: ignore[attr-defined]
    sarif = json.loads(render(report, "sarif"))  # type: ignore[arg-type]
    sup = next(r for r in sarif["runs"][0]["results"] if r["ruleId"] == "PYSEC-2019-13")["suppressions"]
    assert sup[0]["kind"] == "external" and "JSONField unused" in sup[0]["justification"]
    bom = json.loads(render(report, "cyclonedx"))  # type: ignore[arg-type]
    v = next(x for x in bom["vulnerabilities"] if x["id"] == "PYSEC-2019-13")
    assert "waived by vulnerability:CVE-2019-14234" in v["analysis"]["detail"]
    from io import StringIO

    from rich.console import Console

    from garrison.scan.report.table import print_table

    buf = StringIO()
    print_table(report, Console(file=buf, width=250))  # type: ignore[arg-type]
    assert "JSONField unused" in buf.getvalue() and "warning" in buf.getvalue()


def test_sarif_regions(django_droplet: Path, advisory_db: Path) -> None:
    report = _scan(django_droplet, advisory_db, {})
    sarif = json.loads(render(report, "sarif"))  # type: ignore[arg-type]
    results = [r for r in sarif["runs"][0]["results"] if r["ruleId"] == "PYSEC-2019-13"]
    locs = {loc["physicalLocation"]["artifactLocation"]["uri"]: loc for loc in results[0]["locations"]}
    assert locs["app/requirements.txt"]["physicalLocation"]["region"] == {"startLine": 3}
    meta = next(u for u in locs if u.endswith("METADATA"))
    assert locs[meta]["physicalLocation"]["region"] == {"startLine": 3}  # the Version: line
    # a Go binary has no line: the SBOM component is given as a logical location
    go = next(r for r in sarif["runs"][0]["results"] if r["ruleId"] == "GO-2023-2102")["locations"][0]
    assert "region" not in go["physicalLocation"]
    assert go["logicalLocations"][0]["fullyQualifiedName"].startswith("pkg:golang/golang.org/x/net@")
