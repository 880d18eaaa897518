"""CycloneDX 1.6 SBOM (JSON) with components and the matched vulnerabilities, via cyclonedx-python-lib."""

from __future__ import annotations

from decimal import Decimal

from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.vulnerability import (
    BomTarget,
    ImpactAnalysisResponse,
    ImpactAnalysisState,
    Vulnerability,
    VulnerabilityAnalysis,
    VulnerabilityRating,
    VulnerabilityScoreSource,
    VulnerabilitySeverity,
    VulnerabilitySource,
)
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from garrison.scan.model import ScanReport, VulnerabilityFinding


def _purl(text: str) -> PackageURL | None:
    try:
        return PackageURL.from_string(text) if text else None
    except ValueError:
        return None


def _analysis(v: VulnerabilityFinding) -> VulnerabilityAnalysis | None:
    """A waived finding: accepted by an assurance-policy exception (risk accepted, not fixed)."""
    if v.waiver is None:
        return None
    expiry = f" until {v.waiver.expires}" if v.waiver.expires else ""
    return VulnerabilityAnalysis(
        state=ImpactAnalysisState.EXPLOITABLE,
        responses=[ImpactAnalysisResponse.WILL_NOT_FIX],
        detail=f"waived by {v.waiver.exception}{expiry}: {v.waiver.reason}",
    )


def render_cyclonedx(report: ScanReport) -> str:
    bom = Bom()
    root = Component(name=report.app_name or report.target, type=ComponentType.APPLICATION, bom_ref="target")
    bom.metadata.component = root
    refs: dict[tuple[str, str, str], str] = {}
    for i, p in enumerate(report.packages):
        ref = f"pkg-{i}"
        refs[(p.ecosystem, p.name, p.version)] = ref
        group, name = p.name.split(":", 1) if p.ecosystem == "Maven" and ":" in p.name else (None, p.name)
        bom.components.add(
            Component(name=name, group=group, version=p.version, purl=_purl(p.purl), bom_ref=ref)
        )
    bom.register_dependency(root, list(bom.components))
    for j, v in enumerate(report.vulnerabilities):
        ratings = []
        if v.cvss_score is not None or v.severity.value != "unknown":
            ratings.append(
                VulnerabilityRating(
                    score=Decimal(str(v.cvss_score)) if v.cvss_score is not None else None,
                    severity=VulnerabilitySeverity(v.severity.value),
                    method=VulnerabilityScoreSource.CVSS_V3_1 if v.cvss_vector else None,
                    vector=v.cvss_vector,
                )
            )
        target_ref = refs.get((v.ecosystem, v.package, v.version))
        bom.vulnerabilities.add(
            Vulnerability(
                bom_ref=f"vuln-{j}",
                id=v.id,
                source=VulnerabilitySource(name=", ".join(v.sources) or "OSV"),
                analysis=_analysis(v),
                description=v.summary or None,
                recommendation=f"Upgrade to {', '.join(v.fixed_versions)}" if v.fixed_versions else None,
                ratings=ratings,
                affects=[BomTarget(ref=target_ref)] if target_ref else [],
            )
        )
    return JsonV1Dot6(bom).output_as_string(indent=2)
