"""Scan reports: storing them, the per-digest verdict the defender gate asks for, blobstore rescans."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from garrison.console.services.policies import PolicyService, assurance_model
from garrison.console.store.open import Store

log = logging.getLogger("garrison.console.scans")


class ScanService:
    def __init__(self, store: Store, policies: PolicyService) -> None:
        self.store = store
        self.policies = policies
        self._rescanner: Any = None

    def add(self, body: dict[str, Any]) -> int:
        summary = body.get("summary") if isinstance(body.get("summary"), dict) else {}
        return self.store.scans.add(
            str(body["digest"]), str(body["verdict"]), str(body.get("app_name") or ""), summary or {}, body
        )

    def runtime_effect(self) -> str:
        effect = self.policies.assurance().get("runtime_effect", "alert")
        return effect if effect in ("disable", "alert", "prevent") else "alert"

    def verdict(self, digest: str) -> dict[str, Any]:
        """Always an answer (the defender gate must not fail on an unknown droplet): `unknown` when
        no scan of this digest was reported."""
        row = self.store.scans.latest_for_digest(digest)
        out: dict[str, Any] = {
            "digest": digest,
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
                "scanned_at": row["created_at"],
            }
        return out

    # -- blobstore -------------------------------------------------------------------------------
    def start_blobstore(self, folder: Path) -> None:
        """Rescan the droplets in `folder` (scanner component) and store each report like a POST."""
        try:
            from garrison.scan.blobstore import BlobstoreScanner
            from garrison.scan.vulndb.index import DB_FILE, default_db_dir
        except ImportError as exc:  # pragma: no cover - the scanner ships with the console
            log.warning("blobstore rescans disabled: scanner not available (%s)", exc)
            return
        db_dir: Path | None = default_db_dir()
        if db_dir is not None and not (db_dir / DB_FILE).exists():
            log.warning("no vulnerability database in %s: blobstore scans check secrets/malware only", db_dir)
            db_dir = None
        model = assurance_model()

        def policy() -> Any:
            return model.model_validate(self.policies.assurance()) if model is not None else None

        def on_result(_path: Path, report: Any) -> None:
            self.add(report.model_dump(mode="json"))

        self._rescanner = BlobstoreScanner(folder, db_dir, on_result, policy=policy)
        self._rescanner.start()

    def stop(self) -> None:
        if self._rescanner is not None:
            self._rescanner.stop()
            self._rescanner = None
