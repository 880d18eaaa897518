"""Assurance policy: the rules that turn a scan report into a pass/fail verdict.

Used from a file (`garrison scan --policy`) or fetched from the console (`/api/v1/policies/assurance`);
the same pydantic model is the wire format in both places.
"""

from __future__ import annotations

import fnmatch
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from garrison.scan.model import ScanReport, Severity, VulnerabilityFinding, WaivedFinding, Waiver


class VulnerabilityException(BaseModel):
    """Accept one advisory (by id or any alias), optionally only for some packages, until `expires`."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    packages: list[str] = Field(default_factory=list)  # package-name globs; empty = any package
    reason: str = Field(min_length=1)
    expires: date | None = None


class PackageException(BaseModel):
    """Accept every finding on a package (name glob, optional ecosystem and version glob) until `expires`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    ecosystem: str | None = None
    version: str | None = None
    reason: str = Field(min_length=1)
    expires: date | None = None


class SeverityThresholds(BaseModel):
    """Maximum number of (non-excepted) findings allowed per severity; None = unlimited."""

    model_config = ConfigDict(extra="forbid")

    critical: int | None = Field(default=0, ge=0)
    high: int | None = Field(default=None, ge=0)
    medium: int | None = Field(default=None, ge=0)
    low: int | None = Field(default=None, ge=0)
    unknown: int | None = Field(default=None, ge=0)


class AssurancePolicy(BaseModel):
    """Compliance rules for droplets; an empty document is a sensible default (block critical, secrets, malware)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "default"
    enabled: bool = True
    thresholds: SeverityThresholds = Field(default_factory=SeverityThresholds)
    block_secrets: bool = True
    block_malware: bool = True
    max_db_age_days: int | None = Field(default=7, ge=0)
    vulnerability_exceptions: list[VulnerabilityException] = Field(default_factory=list)
    package_exceptions: list[PackageException] = Field(default_factory=list)
    # "prevent": the defender refuses to start a failed droplet; "alert": it starts but audits.
    runtime_effect: Literal["disable", "alert", "prevent"] = "alert"
    # What a finding of unknown severity means (most PyPA and all Go advisories carry no rating):
    # "fail" fails the verdict for those with a fixed version available (and warns for the rest),
    # "warn" only warns, "ignore" leaves them to `thresholds.unknown`.
    unknown_severity: Literal["fail", "warn", "ignore"] = "fail"

    @field_validator("vulnerability_exceptions")
    @classmethod
    def _unique_ids(cls, v: list[VulnerabilityException]) -> list[VulnerabilityException]:
        seen: set[tuple[str, tuple[str, ...]]] = set()
        for exc in v:
            key = (exc.id.upper(), tuple(exc.packages))
            if key in seen:
                raise ValueError(f"duplicate exception for {exc.id}")
            seen.add(key)
        return v


def _active(expires: date | None, today: date) -> bool:
    return expires is None or today <= expires


def _waiver(
    f: VulnerabilityFinding, vexc: list[VulnerabilityException], pexc: list[PackageException]
) -> VulnerabilityException | PackageException | None:
    """The first active exception that accepts this finding (by advisory id/alias, or by package)."""
    ids = {f.id.upper(), *(a.upper() for a in f.aliases)}
    for e in vexc:
        if e.id.upper() in ids and (
            not e.packages or any(fnmatch.fnmatchcase(f.package, p) for p in e.packages)
        ):
            return e
    for p in pexc:
        if (
            fnmatch.fnmatchcase(f.package.lower(), p.name.lower())
            and (p.ecosystem is None or f.ecosystem.split(":")[0].lower() == p.ecosystem.lower())
            and (p.version is None or fnmatch.fnmatchcase(f.version, p.version))
        ):
            return p
    return None


def waived(
    report: ScanReport, policy: AssurancePolicy, *, now: datetime | None = None
) -> list[WaivedFinding]:
    """Findings the policy's active exceptions accept, with the exception's reason and expiry."""
    today = (now or datetime.now(UTC)).date()
    vexc = [e for e in policy.vulnerability_exceptions if _active(e.expires, today)]
    pexc = [e for e in policy.package_exceptions if _active(e.expires, today)]
    out: list[WaivedFinding] = []
    for f in report.vulnerabilities:
        e = _waiver(f, vexc, pexc)
        if e is not None:
            out.append(
                WaivedFinding(
                    id=f.id,
                    package=f.package,
                    version=f.version,
                    severity=f.severity,
                    reason=e.reason,
                    expires=e.expires,
                    rule="vulnerability" if isinstance(e, VulnerabilityException) else "package",
                )
            )
    return out


def _sample(found: list[str]) -> str:
    return ", ".join(found[:5]) + (" ..." if len(found) > 5 else "")


def _as_waiver(e: VulnerabilityException | PackageException) -> Waiver:
    name = f"vulnerability:{e.id}" if isinstance(e, VulnerabilityException) else f"package:{e.name}"
    return Waiver(exception=name, reason=e.reason, expires=e.expires)


def judge(
    report: ScanReport, policy: AssurancePolicy, *, now: datetime | None = None
) -> tuple[str, list[str], list[str], dict[int, Waiver]]:
    """(verdict, reasons, warnings, waivers by finding index). Reasons name every rule that failed,
    so a staging log is actionable; warnings name what the policy lets through but should be seen."""
    now = now or datetime.now(UTC)
    today = now.date()
    if not policy.enabled:
        return "pass", ["assurance policy disabled"], [], {}
    reasons: list[str] = []
    warnings: list[str] = []
    waivers: dict[int, Waiver] = {}
    counts: dict[Severity, list[str]] = {s: [] for s in Severity}
    vexc = [e for e in policy.vulnerability_exceptions if _active(e.expires, today)]
    pexc = [e for e in policy.package_exceptions if _active(e.expires, today)]
    expired_v = [e for e in policy.vulnerability_exceptions if not _active(e.expires, today)]
    expired_p = [e for e in policy.package_exceptions if not _active(e.expires, today)]
    unknown_fixable: list[str] = []
    unknown_unfixed: list[str] = []
    expired_hits: set[str] = set()
    for i, f in enumerate(report.vulnerabilities):
        accepted = _waiver(f, vexc, pexc)
        if accepted is not None:
            waivers[i] = _as_waiver(accepted)
            continue
        old = _waiver(f, expired_v, expired_p)
        if old is not None:
            w = _as_waiver(old)
            expired_hits.add(f"{w.exception} for {f.id} (expired {w.expires})")
        label = f"{f.id} in {f.package} {f.version}"
        counts[f.severity].append(label)
        if f.severity is Severity.UNKNOWN:
            (unknown_fixable if f.fixed_versions else unknown_unfixed).append(label)
    for sev in (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.UNKNOWN):
        limit = getattr(policy.thresholds, sev.value)
        found = counts[sev]
        if limit is not None and len(found) > limit:
            reasons.append(f"{len(found)} {sev.value} vulnerabilities (allowed {limit}): {_sample(found)}")
    unknown_limit = policy.thresholds.unknown
    already = unknown_limit is not None and len(counts[Severity.UNKNOWN]) > unknown_limit
    if policy.unknown_severity == "fail" and unknown_fixable and not already:
        reasons.append(
            f"{len(unknown_fixable)} vulnerabilities of unknown severity with a fix available "
            f"(unknown_severity: fail): {_sample(unknown_fixable)}"
        )
    if policy.unknown_severity != "ignore":
        rest = unknown_unfixed if policy.unknown_severity == "fail" else unknown_fixable + unknown_unfixed
        if rest:
            warnings.append(f"{len(rest)} vulnerabilities of unknown severity: {_sample(rest)}")
    if expired_hits:
        warnings.append(f"expired exceptions no longer waive findings: {_sample(sorted(expired_hits))}")
    if policy.block_secrets and report.secrets:
        where = ", ".join(f"{s.kind} at {s.path}:{s.line}" for s in report.secrets[:5])
        reasons.append(f"{len(report.secrets)} secrets found: {where}")
    if policy.block_malware and report.malware:
        where = ", ".join(f"{m.path} ({m.rule})" for m in report.malware[:5])
        reasons.append(f"{len(report.malware)} malware findings: {where}")
    if policy.max_db_age_days is not None:
        if report.db_updated_at is None:
            reasons.append("no vulnerability database was used")
        else:
            updated = report.db_updated_at
            if updated.tzinfo is None:
                updated = updated.replace(tzinfo=UTC)
            if now - updated > timedelta(days=policy.max_db_age_days):
                age = (now - updated).days
                reasons.append(f"vulnerability database is {age} days old (max {policy.max_db_age_days})")
    return ("fail" if reasons else "pass"), reasons, warnings, waivers


def evaluate(
    report: ScanReport, policy: AssurancePolicy, *, now: datetime | None = None
) -> tuple[str, list[str]]:
    """Return (verdict, reasons)."""
    verdict, reasons, _warnings, _waivers = judge(report, policy, now=now)
    return verdict, reasons


def apply(report: ScanReport, policy: AssurancePolicy, *, now: datetime | None = None) -> ScanReport:
    """Set the report's verdict, reasons and warnings from the policy, and mark each waived finding
    with the exception that accepted it (returns the same object)."""
    verdict, report.reasons, report.warnings, waivers = judge(report, policy, now=now)
    report.verdict = "fail" if verdict == "fail" else "pass"
    for i, f in enumerate(report.vulnerabilities):
        f.waiver = waivers.get(i)
    report.waived = waived(report, policy, now=now) if policy.enabled else []
    report.policy = policy.name
    return report
