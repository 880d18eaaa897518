"""A cell's compliance posture: the cell assurance policy, its verdict, history for trends, and the
alert when a cell drifts from a passing state."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from garrison.host.model import CisReport, HostEvent
from garrison.scan.assurance import AssurancePolicy, evaluate
from garrison.scan.model import ScanReport


class CisThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str = "cis_level1_server"
    min_score: float | None = Field(default=None, ge=0, le=100, description="lowest passing CIS score")
    required_rules: list[str] = Field(default_factory=list, description="rule ids (short or full) that must pass")
    require_applicable: bool = Field(default=False, description="fail a cell the CIS content does not apply to")


class CellPolicy(BaseModel):
    """What a compliant cell is. Host-scan findings are judged by the droplets' assurance policy model."""

    model_config = ConfigDict(extra="forbid")

    name: str = "default"
    cis: CisThresholds = Field(default_factory=CisThresholds)
    packages: AssurancePolicy | None = Field(default=None, description="host scan verdict; None = not judged")


def _short(rule_id: str) -> str:
    return rule_id.removeprefix("xccdf_org.ssgproject.content_rule_")


def judge(policy: CellPolicy, cis: CisReport | None, scan: ScanReport | None) -> tuple[str, list[str]]:
    """(pass | fail, reasons) of a cell against the cell policy."""
    reasons: list[str] = []
    if cis is not None:
        if not cis.applicable:
            if policy.cis.require_applicable:
                reasons.append(f"CIS: {cis.reason}")
        else:
            if policy.cis.min_score is not None and (cis.score or 0) < policy.cis.min_score:
                reasons.append(f"CIS score {cis.score} below {policy.cis.min_score}")
            outcome = {_short(r.id): r.result for r in cis.rules}
            for want in policy.cis.required_rules:
                got = outcome.get(_short(want))
                if got != "pass":
                    reasons.append(f"CIS rule {_short(want)} must pass: {got or 'not evaluated'}")
    elif policy.cis.min_score is not None or policy.cis.required_rules:
        reasons.append("CIS: no benchmark result")
    if policy.packages is not None and scan is not None:
        verdict, why = evaluate(scan, policy.packages)
        if verdict == "fail":
            reasons.extend(f"host scan: {r}" for r in why)
    return ("fail" if reasons else "pass"), reasons


class PostureStore:
    """History of a cell's checks in SQLite (mode 0600), for trends and drift alerts."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = sqlite3.connect(path, isolation_level=None)
        os.chmod(path, 0o600)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS cis_runs (time REAL, profile TEXT, applicable INT, score REAL,"
            " counts TEXT, failed TEXT)"
        )
        self.db.execute("CREATE TABLE IF NOT EXISTS verdicts (time REAL, verdict TEXT, reasons TEXT)")

    def close(self) -> None:
        self.db.close()

    def add_cis(self, report: CisReport) -> None:
        self.db.execute(
            "INSERT INTO cis_runs VALUES (?,?,?,?,?,?)",
            (report.started, report.profile, int(report.applicable), report.score, json.dumps(report.counts),
             json.dumps([_short(r.id) for r in report.failed()])),
        )

    def cis_trend(self, limit: int = 30) -> list[dict]:
        rows = self.db.execute(
            "SELECT time, profile, applicable, score, counts, failed FROM cis_runs ORDER BY time DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            {"time": t, "profile": p, "applicable": bool(a), "score": s, "counts": json.loads(c),
             "failed": json.loads(f)}
            for t, p, a, s, c, f in reversed(rows)
        ]

    def record_verdict(self, verdict: str, reasons: list[str], host: str) -> HostEvent | None:
        """Store the verdict; a compliance event when the cell left (or regained) a passing state."""
        last = self.db.execute("SELECT verdict FROM verdicts ORDER BY time DESC LIMIT 1").fetchone()
        self.db.execute("INSERT INTO verdicts VALUES (?,?,?)", (time.time(), verdict, json.dumps(reasons)))
        if last and last[0] == "pass" and verdict == "fail":
            return HostEvent(host=host, type="compliance", action="drift", severity="high",
                             message="cell drifted from a passing state: " + "; ".join(reasons)[:3900],
                             extra={"reasons": reasons})
        if last and last[0] == "fail" and verdict == "pass":
            return HostEvent(host=host, type="compliance", action="restored", severity="low",
                             message="cell is compliant again")
        return None
