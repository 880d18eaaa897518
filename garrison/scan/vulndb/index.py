"""SQLite index of advisories, one row per (source, advisory id, package).

The key includes the package because RubySec and the Node.js Security WG file one advisory per
package under a shared CVE id (nokogiri and loofah both carry CVE-2018-8048's family): keyed by id
alone, the last package imported silently replaced the others. OSV ids are globally unique, so their
source is "osv" and an OSV record with several `affected` packages becomes several rows.
An import replaces a key's row when its `modified` is not older, drops withdrawn records, and counts
per source what it read, stored and skipped (with the reason).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from garrison.scan.model import Severity
from garrison.scan.vulndb.cvss import base_score, normalise_vector
from garrison.scan.vulndb.versions import base_ecosystem

DB_FILE = "osv.sqlite"
SCHEMA_VERSION = "2"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS advisory (
  pk INTEGER PRIMARY KEY,
  source TEXT NOT NULL, id TEXT NOT NULL, package TEXT NOT NULL,
  modified TEXT, summary TEXT, aliases TEXT, score REAL, vector TEXT, severity TEXT,
  UNIQUE (source, id, package)
);
CREATE TABLE IF NOT EXISTS affected (
  eco TEXT NOT NULL, name TEXT NOT NULL, ecosystem TEXT NOT NULL,
  adv INTEGER NOT NULL REFERENCES advisory(pk) ON DELETE CASCADE, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS affected_key ON affected(eco, name);
CREATE INDEX IF NOT EXISTS affected_adv ON affected(adv);
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


_VECTOR_TYPES = ("CVSS_V2", "CVSS_V3", "CVSS_V4")
_LABELS = {"moderate": "medium", "important": "high", "none": "low"}


def _vectors(adv: dict[str, Any]) -> list[str]:
    """Every CVSS vector the record carries: OSV `severity[]` (top level and per package) and the
    `database_specific` fields other databases use (`cvss`, `cvss_vector`, `cvss_v3`...)."""
    out: list[str] = []
    blocks = [adv.get("severity") or []]
    blocks += [
        (aff or {}).get("severity") or [] for aff in adv.get("affected") or [] if isinstance(aff, dict)
    ]
    for block in blocks:
        for sev in block if isinstance(block, list) else []:
            if isinstance(sev, dict) and str(sev.get("type", "")) in _VECTOR_TYPES:
                out.append(str(sev.get("score", "")))
    dbs = adv.get("database_specific")
    if isinstance(dbs, dict):
        for key in ("cvss_vector", "cvss", "cvss_v4", "cvss_v3", "cvss_v2"):
            val = dbs.get(key)
            if isinstance(val, str) and "/" in val:
                out.append(val)
            elif isinstance(val, dict) and isinstance(
                val.get("vector_string") or val.get("vectorString"), str
            ):
                out.append(str(val.get("vector_string") or val.get("vectorString")))
    return out


def severity_of(adv: dict[str, Any]) -> tuple[float | None, str | None, Severity]:
    """Best severity for an advisory: the highest score of any vector it carries (computed here),
    else a published numeric score, else a published label (GHSA `MODERATE`, Node.js `high`)."""
    best: tuple[float, str] | None = None
    for vec in _vectors(adv):
        score = base_score(vec)
        if score is not None and (best is None or score > best[0]):
            best = (score, normalise_vector(vec))
    if best:
        return best[0], best[1], Severity.from_score(best[0])
    dbs = adv.get("database_specific") if isinstance(adv.get("database_specific"), dict) else {}
    assert isinstance(dbs, dict)
    for key in ("cvss_score", "cvss_v3", "cvss_v4", "cvss_v2"):
        raw = dbs.get(key)
        if isinstance(raw, int | float) and not isinstance(raw, bool) and 0 < raw <= 10:
            return float(raw), None, Severity.from_score(float(raw))
    label = str(dbs.get("severity") or "").strip().lower()
    label = _LABELS.get(label, label)
    if label in {s.value for s in Severity} - {"unknown"}:
        return None, None, Severity(label)
    return None, None, Severity.UNKNOWN


@dataclass
class SourceCounts:
    """What one source contributed to an import."""

    read: int = 0
    stored: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


@dataclass
class ImportResult:
    imported: int = 0
    withdrawn: int = 0
    skipped_older: int = 0
    invalid: int = 0
    sources: dict[str, SourceCounts] = field(default_factory=dict)

    def source(self, label: str) -> SourceCounts:
        return self.sources.setdefault(label, SourceCounts())


def _label(adv: dict[str, Any], source: str) -> str:
    """Name of the source in import counts: the loader's label, else `osv:<first ecosystem>`."""
    if isinstance(adv.get("_label"), str):
        return str(adv["_label"])
    for aff in adv.get("affected") or []:
        eco = ((aff or {}).get("package") or {}).get("ecosystem") if isinstance(aff, dict) else None
        if isinstance(eco, str):
            return f"{source}:{base_ecosystem(eco)}"
    return source


class SchemaError(RuntimeError):
    """The database was written by an older Garrison; it must be re-imported."""


class VulnIndex:
    """Handle on the SQLite index. Opened read-only unless `create` or `writable` is set, so a scan
    can never modify (or lock for writing) the database another process is importing into."""

    def __init__(self, db_dir: Path, *, create: bool = False, writable: bool = False) -> None:
        self.db_dir = Path(db_dir)
        self.path = self.db_dir / DB_FILE
        if not self.path.exists() and not create:
            raise FileNotFoundError(
                f"no vulnerability database at {self.path}; run `garrison db import FILES...` first"
            )
        self.writable = create or writable
        if create:
            self.db_dir.mkdir(parents=True, exist_ok=True)
        if self.writable:
            self.conn = sqlite3.connect(self.path, check_same_thread=False)
        else:
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        self.conn.execute("PRAGMA foreign_keys=ON")
        if create:
            self._create_or_upgrade()
        elif self._schema() != SCHEMA_VERSION:
            self.conn.close()
            raise SchemaError(
                f"{self.path} was written by an older Garrison (schema {self._schema_of(self.path)}); "
                "import the advisories again with `garrison db import`"
            )

    @staticmethod
    def _schema_of(path: Path) -> str:
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
                row = c.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                return str(row[0]) if row else "1"
        except sqlite3.Error:
            return "unknown"

    def _schema(self) -> str:
        try:
            return self._meta("schema") or "1"
        except sqlite3.Error:
            return "1"

    def _create_or_upgrade(self) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "advisory" in tables and self._schema() != SCHEMA_VERSION:
            # schema 1 keyed advisories by id alone (and lost some): rebuild, sources must re-import
            self.conn.executescript("DROP TABLE IF EXISTS affected; DROP TABLE IF EXISTS advisory;")
            self.conn.execute("DELETE FROM meta WHERE key IN ('sources', 'updated_at')")
        self.conn.executescript(_SCHEMA)
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> VulnIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- import -----------------------------------------------------------------------------------
    def import_advisories(self, advisories: Iterable[dict[str, Any]], source: str) -> ImportResult:
        """Store advisories (OSV-shaped dicts; `_source`/`_label` set by the loader for non-OSV data)."""
        res = ImportResult()
        cur = self.conn.cursor()
        cur.execute("BEGIN")
        seen: dict[tuple[str, str, tuple[str, ...]], str] = {}  # key -> modified, within this import
        for adv in advisories:
            label = _label(adv, "osv")
            counts = res.source(label)
            counts.read += 1
            ident = adv.get("id")
            if not isinstance(ident, str) or not ident:
                res.invalid += 1
                counts.skip("no advisory id")
                continue
            src = str(adv.get("_source") or "osv")
            modified = str(adv.get("modified") or "")
            packages: list[tuple[str, str, str, dict[str, Any]]] = []
            for aff in adv.get("affected") or []:
                pkg = (aff or {}).get("package") or {} if isinstance(aff, dict) else {}
                eco, name = pkg.get("ecosystem"), pkg.get("name")
                if isinstance(eco, str) and isinstance(name, str) and eco and name:
                    data = {"ranges": aff.get("ranges") or [], "versions": aff.get("versions") or []}
                    packages.append((eco, name, f"{base_ecosystem(eco)}/{normalise_name(eco, name)}", data))
            # OSV ids are unique across packages; RubySec and Node.js WG ids are unique per package
            pkg_keys = tuple(sorted({p[2] for p in packages}))
            seen_key = (src, ident, () if src == "osv" else pkg_keys)
            where, args = "source=? AND id=?", [src, ident]
            if src != "osv":
                where += f" AND package IN ({','.join('?' * len(pkg_keys))})"
                args += list(pkg_keys)
            again = seen_key in seen
            if again and seen[seen_key] >= modified:
                counts.skip("read twice in this import (an older or identical copy)")
                continue
            seen[seen_key] = modified
            old = cur.execute(f"SELECT MAX(modified) FROM advisory WHERE {where}", args).fetchone()[0]
            if old and modified and old > modified:
                res.skipped_older += 1
                counts.skip("a newer version is already stored")
                continue
            if not packages and not adv.get("withdrawn"):
                res.invalid += 1
                counts.skip("names no package")
                continue
            cur.execute(f"DELETE FROM advisory WHERE {where}", args)
            if adv.get("withdrawn"):
                res.withdrawn += 1
                counts.skip("withdrawn")
                continue
            score, vector, sev = severity_of(adv)
            aliases = [a for a in adv.get("aliases") or [] if isinstance(a, str) and a != ident]
            summary = str(adv.get("summary") or adv.get("details") or "")[:300]
            by_key: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
            for eco, name, key, data in packages:
                by_key.setdefault(key, []).append((eco, name, data))
            for key, rows in by_key.items():
                cur.execute(
                    "INSERT INTO advisory (source, id, package, modified, summary, aliases, score, vector,"
                    " severity) VALUES (?,?,?,?,?,?,?,?,?)",
                    (src, ident, key, modified, summary, json.dumps(aliases), score, vector, sev.value),
                )
                pk = cur.lastrowid
                for eco, name, data in rows:
                    cur.execute(
                        "INSERT INTO affected VALUES (?,?,?,?,?)",
                        (base_ecosystem(eco), normalise_name(eco, name), eco, pk, json.dumps(data)),
                    )
            if again:
                counts.skip("read twice in this import (replaced by a newer copy)")
            else:
                counts.stored += 1
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
                "SELECT f.eco, COUNT(DISTINCT a.source || ' ' || a.id) FROM affected f"
                " JOIN advisory a ON a.pk = f.adv GROUP BY f.eco ORDER BY f.eco"
            ).fetchall()
        )
        (total,) = self.conn.execute("SELECT COUNT(DISTINCT source || ' ' || id) FROM advisory").fetchone()
        (rows,) = self.conn.execute("SELECT COUNT(*) FROM advisory").fetchone()
        updated = self.updated_at()
        return {
            "path": str(self.path),
            "advisories": total,
            "advisory_packages": rows,
            "by_ecosystem": per_eco,
            "updated_at": updated.isoformat() if updated else None,
            "sources": json.loads(self._meta("sources") or "[]"),
            "size_bytes": self.path.stat().st_size,
            "generation": self.generation(),
        }

    def candidates(self, ecosystem: str, name: str) -> list[tuple[str, int, dict[str, Any]]]:
        """(affected ecosystem, advisory row key, {ranges, versions}) rows for one package name."""
        rows = self.conn.execute(
            "SELECT ecosystem, adv, data FROM affected WHERE eco=? AND name=?",
            (base_ecosystem(ecosystem), normalise_name(ecosystem, name)),
        ).fetchall()
        return [(e, a, json.loads(d)) for e, a, d in rows]

    def advisory(self, pk: int) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT id, summary, aliases, score, vector, severity, source FROM advisory WHERE pk=?", (pk,)
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
            "source": row[6],
        }
