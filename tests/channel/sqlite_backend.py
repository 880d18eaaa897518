"""A small SQLite-backed ChannelBackend for the channel tests (the real console is tested too)."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from garrison.channel.backend import DefenderHello, EnrolmentRefused
from garrison.channel.protocol import AppIdentity
from garrison.pki.ca import CertificateAuthority
from garrison.policy.audit import AuditEvent
from garrison.policy.model import RuntimePolicy

MAX_CLOCK_SKEW_S = 300.0


class SqliteBackend:
    def __init__(self, path: Path, ca: CertificateAuthority, token: str) -> None:
        self.ca = ca
        self.token = token
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS defenders (id TEXT PRIMARY KEY, connected INTEGER, revoked INTEGER,
                hello TEXT, last_seen REAL, stats TEXT);
            CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY);
            CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, defender_id TEXT, body TEXT);
            CREATE TABLE IF NOT EXISTS policy (k INTEGER PRIMARY KEY CHECK (k = 1), body TEXT);
            """
        )
        self.fail_store = False

    async def enrol(
        self,
        token: str,
        nonce: str,
        timestamp: float,
        csr_pem: bytes,
        requested_id: str,
        identity: AppIdentity | None = None,
        defender_type: str = "app-embedded",
    ) -> tuple[str, bytes]:
        if defender_type != "app-embedded":
            raise EnrolmentRefused("this test backend enrols app-embedded defenders only")
        if token != self.token:
            raise EnrolmentRefused("unknown enrolment token")
        if abs(time.time() - timestamp) > MAX_CLOCK_SKEW_S:
            raise EnrolmentRefused("stale enrolment request (check the clock)")
        try:
            self.db.execute("INSERT INTO nonces VALUES (?)", (nonce,))
        except sqlite3.IntegrityError:
            raise EnrolmentRefused("replayed enrolment request") from None
        defender_id = f"{requested_id or 'defender'}-{uuid.uuid4().hex[:8]}"
        cert = self.ca.sign_defender_csr(csr_pem, defender_id)
        self.db.execute("INSERT INTO defenders (id, connected, revoked) VALUES (?, 0, 0)", (defender_id,))
        return defender_id, cert

    async def defender_connected(self, hello: DefenderHello) -> AppIdentity | None:
        self.db.execute(
            "UPDATE defenders SET connected = 1, hello = ?, last_seen = ? WHERE id = ?",
            (json.dumps(hello.__dict__), time.time(), hello.defender_id),
        )
        return None

    async def defender_disconnected(self, defender_id: str) -> None:
        self.db.execute("UPDATE defenders SET connected = 0 WHERE id = ?", (defender_id,))

    async def heartbeat(self, defender_id: str, stats: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE defenders SET last_seen = ?, stats = ? WHERE id = ?",
            (time.time(), json.dumps(stats), defender_id),
        )

    async def current_policy(self) -> RuntimePolicy:
        row = self.db.execute("SELECT body FROM policy").fetchone()
        return RuntimePolicy.model_validate_json(row[0]) if row else RuntimePolicy()

    def put_policy(self, policy: RuntimePolicy) -> RuntimePolicy:
        current = self.db.execute("SELECT body FROM policy").fetchone()
        rev = RuntimePolicy.model_validate_json(current[0]).revision + 1 if current else 1
        stored = policy.model_copy(update={"revision": rev})
        self.db.execute("INSERT OR REPLACE INTO policy VALUES (1, ?)", (stored.model_dump_json(),))
        return stored

    async def store_events(self, defender_id: str, events: Sequence[AuditEvent]) -> int:
        if self.fail_store:
            raise RuntimeError("store is down")
        before = self.db.total_changes
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT OR IGNORE INTO events VALUES (?, ?, ?)",
            [(e.id, defender_id, e.model_dump_json()) for e in events],
        )
        self.db.execute("COMMIT")
        return self.db.total_changes - before

    async def workloads(self, defender_id: str, msg: object) -> str:
        return "this test backend has no cell defenders"

    async def droplet_verdict(self, digest: str, app_guid: str) -> dict[str, Any]:
        return {"digest": digest, "verdict": "unknown", "reasons": [], "effect": "alert"}

    async def is_revoked(self, defender_id: str) -> bool:
        row = self.db.execute("SELECT revoked FROM defenders WHERE id = ?", (defender_id,)).fetchone()
        return row is None or bool(row[0])

    # test helpers
    def revoke(self, defender_id: str) -> None:
        self.db.execute("UPDATE defenders SET revoked = 1 WHERE id = ?", (defender_id,))

    def connected(self, defender_id: str) -> bool:
        row = self.db.execute("SELECT connected FROM defenders WHERE id = ?", (defender_id,)).fetchone()
        return bool(row and row[0])

    def event_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT id FROM events ORDER BY id")]

    def stats_of(self, defender_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT stats FROM defenders WHERE id = ?", (defender_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None
