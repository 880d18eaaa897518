"""Human output: rich tables of findings and a verdict line (the default format)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from garrison.scan.model import ScanReport, Severity

_STYLE = {
    Severity.CRITICAL: "bold red",
    Severity.HIGH: "red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.UNKNOWN: "dim",
}


def print_table(report: ScanReport, console: Console, *, max_rows: int = 200) -> None:
    s = report.summary
    console.print(
        f"[bold]{report.target}[/] ({report.target_kind}) {report.digest}\n"
        f"{s.files} files, {s.packages} packages, {s.vulnerabilities} vulnerabilities, "
        f"{s.secrets} secrets, {s.malware} malware"
    )
    if report.vulnerabilities:
        t = Table(title="Vulnerabilities", show_lines=False)
        for col in ("Severity", "ID", "Package", "Version", "Fixed in", "Ecosystem", "Waived"):
            t.add_column(col)
        for v in report.vulnerabilities[:max_rows]:
            waived = "-"
            if v.waiver is not None:
                waived = f"{v.waiver.exception}: {v.waiver.reason}"
                waived += f" (until {v.waiver.expires})" if v.waiver.expires else ""
            t.add_row(
                f"[{_STYLE[v.severity]}]{v.severity.value}" + (f" {v.cvss_score}" if v.cvss_score else ""),
                v.id,
                v.package,
                v.version,
                ", ".join(v.fixed_versions) or "-",
                v.ecosystem,
                waived,
            )
        console.print(t)
        if len(report.vulnerabilities) > max_rows:
            console.print(f"... {len(report.vulnerabilities) - max_rows} more (use --format json)")
    if report.secrets:
        t = Table(title="Secrets (values redacted)")
        for col in ("Kind", "File", "Line", "Fingerprint"):
            t.add_column(col)
        for sec in report.secrets[:max_rows]:
            t.add_row(sec.kind, sec.path, str(sec.line), sec.fingerprint)
        console.print(t)
    if report.malware:
        t = Table(title="Malware")
        for col in ("File", "Indicator", "SHA-256"):
            t.add_column(col)
        for m in report.malware[:max_rows]:
            t.add_row(m.path, m.rule, m.sha256)
        console.print(t)
    for n in report.notices[:50]:
        console.print(f"[dim]notice[/] {n.path}: {n.message}", highlight=False)
    if len(report.notices) > 50:
        console.print(f"[dim]... {len(report.notices) - 50} more notices[/]")
    style = "bold green" if report.verdict == "pass" else "bold red"
    console.print(f"[{style}]verdict: {report.verdict.upper()}[/]")
    for r in report.reasons:
        console.print(f"  - {r}", highlight=False)
    for w in report.warnings:
        console.print(f"  [yellow]warning[/] {w}", highlight=False)
