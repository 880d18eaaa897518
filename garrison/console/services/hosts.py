"""Cells' own security in the console: CIS runs, host scans and host events reported by each cell,
judged here against the one cell assurance policy, so every cell is held to the same rules."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from typing import Any

from garrison.console.store.open import Store
from garrison.host.model import CisReport, HostEvent
from garrison.host.posture import CellPolicy, judge
from garrison.scan.model import ScanReport

POLICY_KEY = "cell_policy"
_FAILED_KEPT = 200


class HostService:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- policy ----------------------------------------------------------------------------------
    def policy(self) -> CellPolicy:
        doc = self.store.settings.get(POLICY_KEY)
        return CellPolicy.model_validate(doc) if doc else CellPolicy()

    def set_policy(self, policy: CellPolicy) -> None:
        self.store.settings.put(POLICY_KEY, policy.model_dump(mode="json"))

    # -- reports ---------------------------------------------------------------------------------
    def report_cis(self, host: str, report: CisReport) -> dict[str, Any]:
        posture = self.store.hosts.touch(host)
        failed = report.failed()
        summary = {
            "time": report.started, "profile": report.profile, "applicable": report.applicable,
            "reason": report.reason, "score": report.score, "counts": report.counts,
            "failed": [r.id.removeprefix("xccdf_org.ssgproject.content_rule_") for r in failed][:_FAILED_KEPT],
            "failed_high": sum(1 for r in failed if r.severity == "high"),
        }
        self.store.hosts.add_report(host, "cis", summary, report.model_dump(mode="json"))
        posture["cis"] = summary
        return self._rejudge(host, posture, cis=report)

    def report_scan(self, host: str, report: ScanReport) -> dict[str, Any]:
        posture = self.store.hosts.touch(host)
        sev: dict[str, int] = {}
        for f in report.vulnerabilities:
            key = str(getattr(f, "severity", None) or "unknown")
            sev[key] = sev.get(key, 0) + 1
        summary = {
            "time": report.scanned_at.timestamp(), "packages": len(report.packages),
            "vulnerabilities": len(report.vulnerabilities), "by_severity": sev,
            "secrets": len(report.secrets), "malware": len(report.malware),
        }
        self.store.hosts.add_report(host, "scan", summary, report.model_dump(mode="json"))
        posture["scan"] = summary
        return self._rejudge(host, posture, scan=report)

    def _latest(self, host: str, kind: str) -> dict[str, Any] | None:
        rows = self.store.hosts.reports(host, kind, 1, with_body=True)
        return rows[0]["body"] if rows else None

    def _rejudge(
        self, host: str, posture: dict[str, Any], *, cis: CisReport | None = None, scan: ScanReport | None = None
    ) -> dict[str, Any]:
        """Judge the newest CIS run and host scan together; a drift event when a passing cell fails."""
        if cis is None and (doc := self._latest(host, "cis")):
            cis = CisReport.model_validate(doc)
        if scan is None and (doc := self._latest(host, "scan")):
            scan = ScanReport.model_validate(doc)
        verdict, reasons = judge(self.policy(), cis, scan)
        before = posture.get("verdict")
        posture |= {"verdict": verdict, "reasons": reasons, "judged_at": time.time()}
        self.store.hosts.set_posture(host, posture)
        if before == "pass" and verdict == "fail":
            self.ingest_events(host, [HostEvent(
                host=host, type="compliance", action="drift", severity="high",
                message="cell drifted from a passing state: " + "; ".join(reasons)[:3900],
                extra={"reasons": reasons},
            )])
        return {"verdict": verdict, "reasons": reasons}

    # -- events ----------------------------------------------------------------------------------
    def ingest_events(self, host: str, events: list[HostEvent]) -> int:
        posture = self.store.hosts.touch(host)
        docs = [e.model_dump(mode="json") | {"host": host} for e in events]
        new = self.store.hosts.add_events(host, docs)
        if new:
            counters = posture.setdefault("counters", {})
            for e in events:
                key = {"fim": "fim_changes", "compliance": "compliance_events"}.get(e.type)
                if e.type == "access":
                    key = "login_failures" if e.action.endswith("_failed") else "access_events"
                    if e.action == "login":
                        posture["last_login"] = {"user": e.user, "source": e.source, "time": e.time}
                if key:
                    counters[key] = counters.get(key, 0) + 1
            self.store.hosts.set_posture(host, posture)
        return new

    # -- views -----------------------------------------------------------------------------------
    def detail(self, host: str) -> dict[str, Any] | None:
        row = self.store.hosts.get(host)
        if row is None:
            return None
        trend = [r["summary"] | {"id": r["id"]} for r in self.store.hosts.reports(host, "cis", 60)]
        return row | {
            "cis_trend": list(reversed(trend)),
            "events": self.store.hosts.events(host, type=None, since=None, limit=100, offset=0),
        }

    def csv_lines(self, rows: list[dict[str, Any]]) -> Iterator[str]:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["host", "verdict", "cis_profile", "cis_score", "cis_failed", "vulnerabilities", "malware",
                    "fim_changes", "login_failures", "last_seen"])
        for r in rows:
            p = r["posture"]
            cis, scan, counters = p.get("cis", {}), p.get("scan", {}), p.get("counters", {})
            w.writerow([
                r["name"], p.get("verdict", "unknown"), cis.get("profile", ""), cis.get("score", ""),
                len(cis.get("failed", [])), scan.get("vulnerabilities", ""), scan.get("malware", ""),
                counters.get("fim_changes", 0), counters.get("login_failures", 0),
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["last_seen"])),
            ])
        yield buf.getvalue()
