"""Report formats, one module each; `render(report, fmt)` returns the text for json/sarif/cyclonedx."""

from __future__ import annotations

from garrison.scan.model import ScanReport

FORMATS = ("table", "json", "sarif", "cyclonedx")


def render(report: ScanReport, fmt: str) -> str:
    if fmt == "json":
        from garrison.scan.report.json import render_json

        return render_json(report)
    if fmt == "sarif":
        from garrison.scan.report.sarif import render_sarif

        return render_sarif(report)
    if fmt == "cyclonedx":
        from garrison.scan.report.cyclonedx import render_cyclonedx

        return render_cyclonedx(report)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
