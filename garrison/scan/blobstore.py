"""Blobstore rescanner: scan every droplet in a folder, again on a schedule and when the DB changes.

The console owns storage; it passes `on_result` (store the report) and `policy` (current assurance
policy). Files are tracked by relative path; unchanged files (size, mtime) are skipped unless a full
rescan is due: the interval elapsed, the vulnerability DB's import generation moved (including a DB
that did not exist when the rescanner started), or the assurance policy changed.

Each report is keyed like the buildpack's: `digest` is the droplet's content digest
(`garrison.scan.identity`), `app` the CF app from the identity record the buildpack wrote into the
droplet, `blob` the path in the blobstore and `archive_sha256` the tarball's own digest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from garrison.scan.assurance import AssurancePolicy
from garrison.scan.identity import collect_tar
from garrison.scan.model import ScanNotice, ScanReport
from garrison.scan.scanner import ScanOptions, ScanRefused, scan
from garrison.scan.vulndb.index import DB_FILE, VulnIndex

log = logging.getLogger(__name__)


class BlobstoreScanner:
    def __init__(
        self,
        folder: Path,
        db_dir: Path | None,
        on_result: Callable[[Path, ScanReport], None],
        *,
        policy: Callable[[], AssurancePolicy | None] = lambda: None,
        on_error: Callable[[Path, str], None] | None = None,
        interval_s: float = 24 * 3600,
        poll_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = Path(folder)
        self.db_dir = db_dir
        self.on_result = on_result
        self.policy = policy
        self.on_error = on_error
        self.interval_s = interval_s
        self.poll_s = poll_s
        self.clock = clock
        self._seen: dict[Path, tuple[int, int]] = {}
        self._last_full: float | None = None
        self._generation: int | None = None
        self._policy_key: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _db(self) -> Path | None:
        """The DB directory if a database is there *now* (one may be imported after start-up)."""
        if self.db_dir is None or not (self.db_dir / DB_FILE).is_file():
            return None
        return self.db_dir

    def _db_generation(self) -> int | None:
        db = self._db()
        if db is None:
            return None
        try:
            with VulnIndex(db) as ix:
                return ix.generation()
        except (FileNotFoundError, OSError):
            return None

    def droplets(self) -> list[Path]:
        return sorted(
            p
            for p in self.folder.rglob("*")
            if p.is_file() and not p.is_symlink() and not p.name.startswith(".")
        )

    def scan_once(self, *, force: bool = False) -> list[ScanReport]:
        """Scan new/changed droplets, or all of them when forced, due, the DB generation moved or the
        assurance policy changed."""
        gen = self._db_generation()
        policy = self.policy() or AssurancePolicy()
        policy_key = policy.model_dump_json()
        now = self.clock()
        full = (
            force
            or self._last_full is None
            or now - self._last_full >= self.interval_s
            or gen != self._generation
            or policy_key != self._policy_key
        )
        if full:
            self._last_full, self._generation, self._policy_key = now, gen, policy_key
        db = self._db()
        reports: list[ScanReport] = []
        present = set()
        for path in self.droplets():
            present.add(path)
            st = path.stat()
            key = (st.st_size, st.st_mtime_ns)
            if not full and self._seen.get(path) == key:
                continue
            blob = path.relative_to(self.folder).as_posix()
            opts = ScanOptions(db_dir=db)
            opts.policy = policy
            try:
                report = scan(path, opts)
                if report.target_kind == "droplet":
                    identify(report, path, blob)
            except (ScanRefused, OSError) as exc:
                log.warning("blobstore scan of %s failed: %s", path, exc)
                if self.on_error:
                    self.on_error(path, str(exc))
                self._seen[path] = key
                continue
            self._seen[path] = key
            self.on_result(path, report)
            reports.append(report)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return reports

    def start(self) -> None:
        """Background loop: poll every `poll_s`; each poll scans what changed or what is due."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="garrison-blobstore", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan_once()
            except Exception:  # keep the loop alive; the next poll retries
                log.exception("blobstore rescan failed")
            self._stop.wait(self.poll_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


def identify(report: ScanReport, path: Path, blob: str) -> ScanReport:
    """Key a blobstore report to what will run: the droplet's content digest and the CF app recorded by
    the buildpack (blob -> app guid -> droplet). The tarball's own sha256 stays in `archive_sha256`."""
    content = collect_tar(path)
    report.archive_sha256 = report.digest
    report.digest = content.digest()
    report.blob = blob
    report.source = "blobstore"
    ident = content.identity()
    if ident is not None:
        report.app = ident.app
        report.app_name = ident.app.name
        if ident.digest != report.digest:
            why = (
                "later buildpacks added files after the supply-phase scan"
                if ident.phase == "supply"
                else "the droplet differs from the one the buildpack scanned at the end of staging"
            )
            report.notices.append(
                ScanNotice(
                    path=blob, message=f"content digest {report.digest} != staged {ident.digest}: {why}"
                )
            )
            report.summary.notices = len(report.notices)
    return report
