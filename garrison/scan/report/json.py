"""JSON output: the ScanReport wire model itself (what `POST /api/v1/scans` accepts)."""

from __future__ import annotations

from garrison.scan.model import ScanReport


def render_json(report: ScanReport) -> str:
    return report.model_dump_json(indent=2)
