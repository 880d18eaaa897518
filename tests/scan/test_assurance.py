"""Assurance policy model and verdicts: thresholds, exceptions with expiry, secrets/malware, DB age."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from garrison.scan.assurance import AssurancePolicy, evaluate
from garrison.scan.model import MalwareFinding, ScanReport, SecretFinding, Severity, VulnerabilityFinding

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _report(
    *vulns: VulnerabilityFinding, secrets: int = 0, malware: int = 0, db_age_days: int = 1
) -> ScanReport:
    return ScanReport(
        digest="sha256:00",
        target="t",
        db_updated_at=NOW - timedelta(days=db_age_days),
        vulnerabilities=list(vulns),
        secrets=[SecretFinding(kind="AWS Access Key", path="a.py", line=3, fingerprint="f")] * secrets,
        malware=[MalwareFinding(path="x", sha256="0" * 64, rule="hash:bad")] * malware,
    )


def _v(
    ident: str, sev: Severity, pkg: str = "django", aliases: list[str] | None = None
) -> VulnerabilityFinding:
    return VulnerabilityFinding(
        id=ident, aliases=aliases or [], ecosystem="PyPI", package=pkg, version="1.0", severity=sev
    )


def test_defaults_block_critical_secrets_malware_and_stale_db() -> None:
    p = AssurancePolicy()
    assert evaluate(_report(_v("A", Severity.HIGH)), p, now=NOW) == ("pass", [])
    verdict, reasons = evaluate(
        _report(_v("A", Severity.CRITICAL), secrets=1, malware=1, db_age_days=30), p, now=NOW
    )
    assert verdict == "fail" and len(reasons) == 4
    assert "1 critical vulnerabilities (allowed 0): A in django 1.0" in reasons[0]
    assert (
        "AWS Access Key at a.py:3" in reasons[1] and "hash:bad" in reasons[2] and "30 days old" in reasons[3]
    )
    no_db = _report()
    no_db.db_updated_at = None
    assert evaluate(no_db, p, now=NOW)[1] == ["no vulnerability database was used"]


def test_thresholds_per_severity() -> None:
    p = AssurancePolicy.model_validate({"thresholds": {"critical": None, "high": 1, "medium": None}})
    assert evaluate(_report(_v("A", Severity.CRITICAL), _v("B", Severity.HIGH)), p, now=NOW)[0] == "pass"
    assert evaluate(_report(_v("B", Severity.HIGH), _v("C", Severity.HIGH)), p, now=NOW)[0] == "fail"


def test_exceptions_by_alias_and_package_with_expiry() -> None:
    crit = _v("GHSA-1", Severity.CRITICAL, aliases=["CVE-2024-1"])
    by_alias = AssurancePolicy.model_validate(
        {"vulnerability_exceptions": [{"id": "cve-2024-1", "reason": "not reachable"}]}
    )
    assert evaluate(_report(crit), by_alias, now=NOW)[0] == "pass"
    other_pkg = AssurancePolicy.model_validate(
        {"vulnerability_exceptions": [{"id": "GHSA-1", "packages": ["flask"], "reason": "r"}]}
    )
    assert evaluate(_report(crit), other_pkg, now=NOW)[0] == "fail"
    expired = AssurancePolicy.model_validate(
        {"vulnerability_exceptions": [{"id": "GHSA-1", "reason": "r", "expires": date(2026, 5, 31)}]}
    )
    assert evaluate(_report(crit), expired, now=NOW)[0] == "fail"
    pkg = AssurancePolicy.model_validate(
        {
            "package_exceptions": [
                {"name": "Djan*", "ecosystem": "pypi", "reason": "vendor", "expires": "2026-06-01"}
            ]
        }
    )
    assert evaluate(_report(crit), pkg, now=NOW)[0] == "pass"


def test_disabled_policy_passes() -> None:
    assert evaluate(_report(secrets=3), AssurancePolicy(enabled=False), now=NOW)[0] == "pass"


@pytest.mark.parametrize(
    "doc",
    [
        {"thresholds": {"critical": -1}},
        {"unknown_field": 1},
        {"vulnerability_exceptions": [{"id": "X"}]},  # reason is mandatory
        {"vulnerability_exceptions": [{"id": "X", "reason": "a"}, {"id": "x", "reason": "b"}]},
        {"runtime_effect": "kill"},
    ],
)
def test_bad_policies_are_rejected(doc: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AssurancePolicy.model_validate(doc)
