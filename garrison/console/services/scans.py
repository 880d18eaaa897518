"""Scan reports: storing them, the verdict the defender gate asks for, blobstore rescans."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from garrison.console.services.policies import PolicyService, assurance_model
from garrison.console.store.open import Store
from garrison.console.store.scans import ScanKey

log = logging.getLogger("garrison.console.scans")


def _s(v: Any, n: int) -> str:
    return v[:n] if isinstance(v, str) else ""


def _timestamp(v: Any) -> float | None:
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str) and v:
        try:
            return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def scan_key(body: dict[str, Any]) -> ScanKey:
    """The identity columns of a report: droplet digest + CF app (guid, org, space, name)."""
    app = body.get("app") if isinstance(body.get("app"), dict) else {}
    return ScanKey(
        digest=str(body["digest"]),
        app_guid=_s(app.get("guid"), 64),
        app_name=_s(body.get("app_name"), 256) or _s(app.get("name"), 256),
        org=_s(app.get("org"), 256),
        space=_s(app.get("space"), 256),
        source=_s(body.get("source"), 16),
        blob=_s(body.get("blob"), 1024),
        db_revision=_s(body.get("db_revision"), 64),
        db_updated_at=_timestamp(body.get("db_updated_at")),
    )


CONSOLE_RESCAN = "blobstore"  # reports the console's own rescanner made (never accepted from POST)


def _tier(row: dict[str, Any]) -> int:
    """The console's own rescan with a vulnerability DB outranks any posted report (whose claims about
    its database a token holder could forge); a posted report outranks a rescan made without a DB."""
    if row["source"] == CONSOLE_RESCAN:
        return 2 if row["db_revision"] else 0
    return 1


def pick_verdict(rows: list[dict[str, Any]], app_guid: str) -> dict[str, Any] | None:
    """Which report decides: one made for this app beats one made for no app; among those the
    console's newest rescan with a database (re-run on every DB import and policy change), else the
    newest posted report (staging, `garrison scan --report-to`), else a rescan without a DB. So a rescan
    that found a new advisory is not cleared by a later staging report or a forged one, and another
    app's report never applies."""
    if not rows:
        return None
    own = [r for r in rows if app_guid and r["app_guid"] == app_guid]
    group = own or rows
    return max(group, key=lambda r: (_tier(r), r["id"]))


class ScanService:
    def __init__(self, store: Store, policies: PolicyService) -> None:
        self.store = store
        self.policies = policies
        self._rescanner: Any = None

    def add(self, body: dict[str, Any], *, rescan: bool = False) -> int:
        """Store a report; only the console's own rescanner (`rescan=True`) may store `blobstore` ones."""
        summary = body.get("summary") if isinstance(body.get("summary"), dict) else {}
        if not rescan and body.get("source") == CONSOLE_RESCAN:
            raise ValueError("source 'blobstore' is reserved for the console's own rescans")
        return self.store.scans.add(scan_key(body), str(body["verdict"]), summary or {}, body)

    def runtime_effect(self) -> str:
        effect = self.policies.assurance().get("runtime_effect", "alert")
        return effect if effect in ("disable", "alert", "prevent") else "alert"

    def verdict(self, digest: str, app_guid: str = "") -> dict[str, Any]:
        """Always an answer (the defender gate must not fail on an unknown droplet): `unknown` when
        no report about this droplet for this app exists."""
        row = pick_verdict(self.store.scans.candidates(digest, app_guid), app_guid)
        out: dict[str, Any] = {
            "digest": digest,
            "app_guid": app_guid,
            "verdict": "unknown",
            "reasons": [],
            "effect": self.runtime_effect(),
        }
        if row is not None:
            full = self.store.scans.get(row["id"]) or {}
            reasons = full.get("body", {}).get("reasons", [])
            out |= {
                "verdict": row["verdict"],
                "reasons": reasons if isinstance(reasons, list) else [],
                "scan_id": row["id"],
                "app_name": row["app_name"],
                "app_guid": row["app_guid"] or app_guid,
                "source": row["source"],
                "db_revision": row["db_revision"],
                "scanned_at": row["created_at"],
            }
        return out

    # -- blobstore -------------------------------------------------------------------------------
    def start_blobstore(self, folder: Path, poll_s: float = 60.0) -> None:
        """Rescan the droplets in `folder` (scanner component) and store each report like a POST.
        The DB directory is watched, not resolved once: a database imported after start-up is used
        from the next poll on (its import generation differs), and so is every later import."""
        try:
            from garrison.scan.blobstore import BlobstoreScanner
            from garrison.scan.vulndb.index import DB_FILE, default_db_dir
        except ImportError as exc:  # pragma: no cover - the scanner ships with the console
            log.warning("blobstore rescans disabled: scanner not available (%s)", exc)
            return
        db_dir: Path = default_db_dir()
        if not (db_dir / DB_FILE).exists():
            log.warning(
                "no vulnerability database in %s yet: blobstore scans check secrets/malware only", db_dir
            )
        model = assurance_model()

        def policy() -> Any:
            return model.model_validate(self.policies.assurance()) if model is not None else None

        def on_result(_path: Path, report: Any) -> None:
            self.add(report.model_dump(mode="json"), rescan=True)

        self._rescanner = BlobstoreScanner(folder, db_dir, on_result, policy=policy, poll_s=poll_s)
        self._rescanner.start()

    def stop(self) -> None:
        if self._rescanner is not None:
            self._rescanner.stop()
            self._rescanner = None
