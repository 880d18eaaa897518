"""Durable on-disk event spool: what the defender has decided but the console has not yet acked.

SQLite in WAL mode with synchronous=NORMAL: an append is a small transaction without an fsync, so it
survives the defender (or the app) crashing and the console being away for hours; only a power loss
can cost the last few commits. Sequence numbers come from AUTOINCREMENT, so they are never reused and
a late ack can never delete an event appended after it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from garrison.policy.audit import AuditEvent

DEFAULT_MAX_EVENTS = 1_000_000
MAX_EVENT_BYTES = 256 * 1024


def _body(event: AuditEvent) -> str:
    """JSON of the event; an oversized one (huge argv/extra) is trimmed, and says so, not dropped."""
    body = event.model_dump_json(exclude_none=True)
    if len(body) <= MAX_EVENT_BYTES:
        return body
    trimmed = event.model_copy(
        update={
            "argv": [a[:1024] for a in event.argv[:64]] if event.argv else event.argv,
            "extra": {"truncated": True, "original_bytes": len(body)},
            "message": event.message[:1024],
        }
    )
    return trimmed.model_dump_json(exclude_none=True)  # bounded: every other field has a max length


class SpoolClosed(RuntimeError):
    """Events submitted after the channel client was stopped."""


class EventSpool:
    """Thread-safe: the defender's supervisor appends, the channel thread reads and acks."""

    def __init__(self, path: Path | str, *, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self.path = str(path)
        self.max_events = max_events
        self.dropped = 0
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._closed = False
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)"
            )
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise sqlite3.DatabaseError(f"event spool {self.path} is unusable: {exc}") from exc
        if self.path != ":memory:":
            Path(self.path).chmod(0o600)

    def append(self, events: Iterable[AuditEvent]) -> int:
        """Spool events; returns the last sequence number (0 when nothing was given)."""
        bodies = [(_body(e),) for e in events]
        if not bodies:
            return 0
        with self._lock:
            self._check_open()
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT INTO spool (body) VALUES (?)", bodies)
                last = self._db.execute("SELECT last_insert_rowid()").fetchone()[0]
                self._enforce_cap()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(last)

    def _enforce_cap(self) -> None:
        (count,) = self._db.execute("SELECT count(*) FROM spool").fetchone()
        excess = count - self.max_events
        if excess > 0:
            self._db.execute(
                "DELETE FROM spool WHERE seq IN (SELECT seq FROM spool ORDER BY seq LIMIT ?)", (excess,)
            )
            self.dropped += excess

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolClosed(f"event spool {self.path} is closed: the channel client was stopped")

    def read_after(self, after_seq: int, limit: int) -> list[tuple[int, str]]:
        """Up to `limit` (seq, event JSON) rows with seq > after_seq, oldest first."""
        with self._lock:
            self._check_open()
            rows = self._db.execute(
                "SELECT seq, body FROM spool WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            ).fetchall()
        return [(int(s), str(b)) for s, b in rows]

    def ack_through(self, seq: int) -> None:
        """The console stored everything up to `seq`: forget it."""
        with self._lock:
            self._check_open()
            self._db.execute("DELETE FROM spool WHERE seq <= ?", (seq,))

    def pending(self) -> int:
        with self._lock:
            self._check_open()
            return int(self._db.execute("SELECT count(*) FROM spool").fetchone()[0])

    def pending_events(self) -> list[AuditEvent]:
        return [AuditEvent.model_validate(json.loads(b)) for _, b in self.read_after(0, 10**9)]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()
