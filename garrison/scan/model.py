"""Scan report wire model, shared by the scanner CLI, the buildpack, the console and the defender gate.

Secret values never enter this model: a secret finding carries its kind, location and a short
fingerprint only, so every output format derived from it is redacted by construction.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Severity(StrEnum):
    """Severity buckets (CVSS v3 qualitative ratings, plus UNKNOWN when no score is published)."""

    UNKNOWN = "unknown"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def from_score(cls, score: float | None) -> Severity:
        """Map a CVSS base score to its qualitative rating (CVSS v3.1 spec, table 14)."""
        if score is None:
            return cls.UNKNOWN
        if score >= 9.0:
            return cls.CRITICAL
        if score >= 7.0:
            return cls.HIGH
        if score >= 4.0:
            return cls.MEDIUM
        if score > 0.0:
            return cls.LOW
        return cls.UNKNOWN


_RANK = {
    Severity.UNKNOWN: 0,
    Severity.LOW: 1,
    Severity.MEDIUM: 2,
    Severity.HIGH: 3,
    Severity.CRITICAL: 4,
}


class Package(BaseModel):
    """One installed or locked package; `name` is as found, matching uses the normalised form."""

    model_config = ConfigDict(extra="forbid")

    ecosystem: str  # OSV ecosystem: PyPI, npm, RubyGems, Maven, Go, Debian:12, Ubuntu:22.04 ...
    name: str
    version: str
    purl: str = ""
    locations: list[str] = Field(default_factory=list)  # paths inside the scanned tree ("!" = inside a jar)
    source: str = ""  # which detector found it: dist-info, package-lock, pom.properties, buildinfo, dpkg...


class Waiver(BaseModel):
    """Why a finding does not count against the assurance policy: the exception that accepted it."""

    model_config = ConfigDict(extra="forbid")

    exception: str  # "vulnerability:<id>" or "package:<name glob>"
    reason: str
    expires: date | None = None


class VulnerabilityFinding(BaseModel):
    """A package version matched by an advisory (aliases folded into one finding)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    aliases: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)  # advisory databases: osv, rubysec, nodejs-security-wg
    ecosystem: str
    package: str
    version: str
    fixed_versions: list[str] = Field(default_factory=list)
    severity: Severity = Severity.UNKNOWN
    cvss_score: float | None = None
    cvss_vector: str | None = None
    summary: str = ""
    locations: list[str] = Field(default_factory=list)
    lines: dict[str, int] = Field(default_factory=dict)  # location -> line naming the package, when known
    purl: str = ""
    waiver: Waiver | None = None  # set by the assurance policy when an exception accepts the finding


class SecretFinding(BaseModel):
    """A credential found in a file; the value itself is never recorded (fingerprint = sha256 prefix)."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    path: str
    line: int
    fingerprint: str
    redacted: str = "[REDACTED]"


class MalwareFinding(BaseModel):
    """A file whose SHA-256 is on a supplied list, or which matches a supplied YARA rule."""

    model_config = ConfigDict(extra="forbid")

    path: str
    sha256: str
    rule: str  # "hash:<label>" or "yara:<namespace>.<rule>"


class ScanNotice(BaseModel):
    """Something the scanner skipped or refused (hostile archive entry, oversized file...)."""

    model_config = ConfigDict(extra="forbid")

    path: str
    message: str


class Summary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    packages: int = 0
    vulnerabilities: int = 0
    by_severity: dict[str, int] = Field(default_factory=dict)
    secrets: int = 0
    malware: int = 0
    files: int = 0
    bytes: int = 0
    notices: int = 0


class AppRef(BaseModel):
    """The Cloud Foundry app a droplet was staged for (from the staging VCAP_APPLICATION)."""

    model_config = ConfigDict(extra="ignore")

    guid: str = Field(default="", max_length=64)
    name: str = Field(default="", max_length=256)
    space: str = Field(default="", max_length=256)
    space_guid: str = Field(default="", max_length=64)
    org: str = Field(default="", max_length=256)
    org_guid: str = Field(default="", max_length=64)

    @property
    def label(self) -> str:
        """`org/space/app`, the way an operator names an app (parts that are unknown are left out)."""
        return "/".join(p for p in (self.org, self.space, self.name) if p)

    @classmethod
    def from_vcap(cls, raw: str | None) -> AppRef | None:
        """From a VCAP_APPLICATION JSON string; None when absent or unreadable (never raises)."""
        try:
            vcap = json.loads(raw or "{}")
        except ValueError:
            return None
        if not isinstance(vcap, dict):
            return None

        def s(*keys: str) -> str:
            for k in keys:
                v = vcap.get(k)
                if isinstance(v, str) and v:
                    return v
            return ""

        ref = cls(
            guid=s("application_id")[:64],
            name=s("application_name", "name")[:256],
            space=s("space_name")[:256],
            space_guid=s("space_id")[:64],
            org=s("organization_name")[:256],
            org_guid=s("organization_id")[:64],
        )
        return ref if (ref.guid or ref.name) else None


class WaivedFinding(BaseModel):
    """A vulnerability the assurance policy accepted (exception), kept in the report for review."""

    model_config = ConfigDict(extra="forbid")

    id: str
    package: str
    version: str
    severity: Severity = Severity.UNKNOWN
    reason: str = ""
    expires: date | None = None
    rule: Literal["vulnerability", "package"] = "vulnerability"


class ScanReport(BaseModel):
    """Result of one scan; `digest` identifies the droplet (sha256 of the file, or a tree digest)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    digest: str  # "sha256:<hex>"
    target: str
    target_kind: Literal["droplet", "directory", "host"] = "droplet"
    app_name: str = ""
    # what will run: the CF app the droplet was staged for, where the report came from, and for a
    # blobstore droplet its blob path and the tarball's own sha256 (`digest` is then the content digest)
    app: AppRef | None = None
    source: Literal["cli", "staging", "blobstore"] = "cli"
    blob: str = ""
    archive_sha256: str = ""
    scanned_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    scanner_version: str = ""
    db_updated_at: datetime | None = None
    db_revision: str = ""  # "<import generation>@<update time>" of the vulnerability DB used
    policy: str = ""  # name of the assurance policy the verdict came from
    verdict: Literal["pass", "fail"] = "pass"
    reasons: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)  # policy findings that warn without failing
    waived: list[WaivedFinding] = Field(default_factory=list)
    summary: Summary = Field(default_factory=Summary)
    packages: list[Package] = Field(default_factory=list)
    vulnerabilities: list[VulnerabilityFinding] = Field(default_factory=list)
    secrets: list[SecretFinding] = Field(default_factory=list)
    malware: list[MalwareFinding] = Field(default_factory=list)
    notices: list[ScanNotice] = Field(default_factory=list)


class VerdictResponse(BaseModel):
    """Body of `GET /api/v1/scans/verdict?digest=...` (console) as read by the defender gate.

    `verdict` is "unknown" when the console holds no scan for the digest; `effect` is the assurance
    policy's `runtime_effect`, telling the defender whether a failed verdict blocks the start.
    """

    model_config = ConfigDict(extra="ignore")

    digest: str
    verdict: Literal["pass", "fail", "unknown"]
    reasons: list[str] = Field(default_factory=list)
    effect: Literal["disable", "alert", "prevent"] = "alert"
    app_name: str = ""
    app_guid: str = ""
    db_revision: str = ""
    scanned_at: datetime | None = None
