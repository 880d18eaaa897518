"""Run-time gate: before starting the app, the defender asks the console for its droplet's verdict.

Pure decision + one HTTP call; the defender records the returned reason in its audit event. Policy:
a failed verdict blocks only when the assurance policy's runtime effect is `prevent`; an unknown
droplet is allowed unless `require_scan`; an unreachable console follows `fail_open`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from garrison.scan.console import ConsoleConfig, ConsoleError, fetch_verdict
from garrison.scan.model import VerdictResponse


@dataclass(frozen=True)
class GateDecision:
    allow: bool
    reason: str
    verdict: str = "unknown"  # pass | fail | unknown | error
    effect: str = "alert"


def decide(v: VerdictResponse, *, require_scan: bool = False) -> GateDecision:
    """Pure mapping from the console's answer to allow/deny (testable without a console)."""
    if v.verdict == "pass":
        return GateDecision(True, f"droplet {v.digest} passed its assurance scan", "pass", v.effect)
    if v.verdict == "unknown":
        if require_scan:
            return GateDecision(
                False, f"droplet {v.digest} was never scanned (scan required)", "unknown", v.effect
            )
        return GateDecision(True, f"droplet {v.digest} has no scan result; allowed", "unknown", v.effect)
    why = "; ".join(v.reasons) or "assurance policy failed"
    if v.effect == "prevent":
        return GateDecision(False, f"droplet {v.digest} is non-compliant: {why}", "fail", v.effect)
    return GateDecision(
        True, f"droplet {v.digest} is non-compliant ({v.effect} only): {why}", "fail", v.effect
    )


def check_droplet(
    cfg: ConsoleConfig,
    digest: str,
    app_name: str = "",
    *,
    app_guid: str = "",
    require_scan: bool = False,
    fail_open: bool = True,
) -> GateDecision:
    """Ask the console about this droplet for this app and decide; never raises (an unreachable
    console follows `fail_open`)."""
    try:
        v = fetch_verdict(cfg, digest, app_name, app_guid)
    except ConsoleError as exc:
        if fail_open:
            return GateDecision(True, f"verdict unavailable, allowed (fail-open): {exc}", "error")
        return GateDecision(False, f"verdict unavailable, refused (fail-closed): {exc}", "error")
    return decide(v, require_scan=require_scan)


def file_digest(path: Path) -> str:
    """`sha256:<hex>` of a droplet file, the same digest `garrison scan` reports for it."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()
