"""SQLite index of advisories keyed by (base ecosystem, normalised package name).

One file (`osv.sqlite`) in a database directory; an import replaces advisories by id (newest
`modified` wins), drops withdrawn ones, and records when the database was last updated so assurance
policies can refuse a stale one.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from garrison.scan.model import Severity
from garrison.scan.vulndb.cvss import base_score
from garrison.scan.vulndb.versions import base_ecosystem

DB_FILE = "osv.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS advisory (
  id TEXT PRIMARY KEY, modified TEXT, summary TEXT, aliases TEXT,
  score REAL, vector TEXT, severity TEXT
);
CREATE TABLE IF NOT EXISTS affected (
  eco TEXT NOT NULL, name TEXT NOT NULL, ecosystem TEXT NOT NULL,
  advisory_id TEXT NOT NULL REFERENCES advisory(id) ON DELETE CASCADE, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS affected_key ON affected(eco, name);
CREATE INDEX IF NOT EXISTS affected_adv ON affected(advisory_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


def default_db_dir() -> Path:
    return Path(os.environ.get("GARRISON_DB_DIR") or Path.home() / ".garrison" / "vulndb")


def normalise_name(ecosystem: str, name: str) -> str:
    """Lookup key for a package name: PEP 503 for PyPI, exact for Go, lower-case elsewhere."""
    eco = base_ecosystem(ecosystem)
    if eco == "PyPI":
        return canonicalize_name(name)
    if eco == "Go":
        return name
    return name.lower()


def severity_of(adv: dict[str, Any]) -> tuple[float | None, str | None, Severity]:
    """Best severity for an advisory: a CVSS v3 vector we score ourselves, else a published score/label."""
    vectors: list[str] = []
    for sev in adv.get("severity") or []:
        if isinstance(sev, dict) and str(sev.get("type", "")).startswith("CVSS_V3"):
            vectors.append(str(sev.get("score", "")))
    for aff in adv.get("affected") or []:
        for sev in (aff or {}).get("severity") or []:
            if isinstance(sev, dict) and str(sev.get("type", "")).startswith("CVSS_V3"):
                vectors.append(str(sev.get("score", "")))
    best: tuple[float, str] | None = None
    for vec in vectors:
        score = base_score(vec)
        if score is not None and (best is None or score > best[0]):
            best = (score, vec)
    if best:
        return best[0], best[1], Severity.from_score(best[0])
    dbs = adv.get("database_specific") or {}
    raw = dbs.get("cvss_score") if isinstance(dbs, dict) else None
    if isinstance(raw, int | float):
        return float(raw), None, Severity.from_score(float(raw))
    label = str(dbs.get("severity", "") if isinstance(dbs, dict) else "").lower()
    label = {"moderate": "medium"}.get(label, label)
    if label in {s.value for s in Severity}:
        return None, None, Severity(label)
    return None, None, Severity.UNKNOWN


@dataclass
class ImportResult:
    imported: int = 0
    withdrawn: int = 0
    skipped_older: int = 0
    invalid: int = 0


class VulnIndex:
    """Handle on the SQLite index; cheap to open, safe to share read-only between threads per connection."""

    def __init__(self, db_dir: Path, *, create: bool = False) -> None:
        self.db_dir = Path(db_dir)
        self.path = self.db_dir / DB_FILE
        if not self.path.exists() and not create:
            raise FileNotFoundError(
                f"no vulnerability database at {self.path}; run `garrison db import FILES...` first"
            )
        if create:
            self.db_dir.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, check_same_thread=False)
        self.conn.execute("PRAGMA foreign_keys=ON")
        if create:
            self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> VulnIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- import -----------------------------------------------------------------------------------
    def import_advisories(self, advisories: Iterable[dict[str, Any]], source: str) -> ImportResult:
        res = ImportResult()
        cur = self.conn.cursor()
        cur.execute("BEGIN")
        for adv in advisories:
            ident = adv.get("id")
            if not isinstance(ident, str) or not ident:
                res.invalid += 1
                continue
            modified = str(adv.get("modified") or "")
            row = cur.execute("SELECT modified FROM advisory WHERE id=?", (ident,)).fetchone()
            if row and row[0] and modified and row[0] > modified:
                res.skipped_older += 1
                continue
            cur.execute("DELETE FROM affected WHERE advisory_id=?", (ident,))
            cur.execute("DELETE FROM advisory WHERE id=?", (ident,))
            if adv.get("withdrawn"):
                res.withdrawn += 1
                continue
            score, vector, sev = severity_of(adv)
            aliases = [a for a in adv.get("aliases") or [] if isinstance(a, str)]
            summary = str(adv.get("summary") or adv.get("details") or "")[:300]
            cur.execute(
                "INSERT INTO advisory VALUES (?,?,?,?,?,?,?)",
                (ident, modified, summary, json.dumps(aliases), score, vector, sev.value),
            )
            for aff in adv.get("affected") or []:
                pkg = (aff or {}).get("package") or {}
                eco, name = pkg.get("ecosystem"), pkg.get("name")
                if not isinstance(eco, str) or not isinstance(name, str):
                    continue
                data = {"ranges": aff.get("ranges") or [], "versions": aff.get("versions") or []}
                cur.execute(
                    "INSERT INTO affected VALUES (?,?,?,?,?)",
                    (base_ecosystem(eco), normalise_name(eco, name), eco, ident, json.dumps(data)),
                )
            res.imported += 1
        now = datetime.now(UTC).isoformat()
        cur.execute("INSERT OR REPLACE INTO meta VALUES ('updated_at', ?)", (now,))
        srcs = json.loads(self._meta("sources") or "[]")
        if source not in srcs:
            srcs.append(source)
        cur.execute("INSERT OR REPLACE INTO meta VALUES ('sources', ?)", (json.dumps(srcs),))
        gen = int(self._meta("generation") or "0") + 1
        cur.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(gen),))
        cur.execute("COMMIT")
        return res

    # -- queries ----------------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def updated_at(self) -> datetime | None:
        v = self._meta("updated_at")
        return datetime.fromisoformat(v) if v else None

    def generation(self) -> int:
        """Bumped by every import: the blobstore rescanner uses it to notice database updates."""
        return int(self._meta("generation") or "0")

    def status(self) -> dict[str, Any]:
        per_eco = dict(
            self.conn.execute(
                "SELECT eco, COUNT(DISTINCT advisory_id) FROM affected GROUP BY eco ORDER BY eco"
            ).fetchall()
        )
        (total,) = self.conn.execute("SELECT COUNT(*) FROM advisory").fetchone()
        updated = self.updated_at()
        return {
            "path": str(self.path),
            "advisories": total,
            "by_ecosystem": per_eco,
            "updated_at": updated.isoformat() if updated else None,
            "sources": json.loads(self._meta("sources") or "[]"),
            "size_bytes": self.path.stat().st_size,
            "generation": self.generation(),
        }

    def candidates(self, ecosystem: str, name: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(affected ecosystem, advisory id, {ranges, versions}) rows for one package name."""
        rows = self.conn.execute(
            "SELECT ecosystem, advisory_id, data FROM affected WHERE eco=? AND name=?",
            (base_ecosystem(ecosystem), normalise_name(ecosystem, name)),
        ).fetchall()
        return [(e, a, json.loads(d)) for e, a, d in rows]

    def advisory(self, ident: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT id, summary, aliases, score, vector, severity FROM advisory WHERE id=?", (ident,)
        ).fetchone()
        if not row:
            return None
        return {
            "id": row[0],
            "summary": row[1],
            "aliases": json.loads(row[2]),
            "score": row[3],
            "vector": row[4],
            "severity": row[5],
        }
