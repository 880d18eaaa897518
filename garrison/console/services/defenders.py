"""Defender lifecycle: enrolment credentials, enrolment checks, listing, revocation."""

from __future__ import annotations

import re
import secrets
import time
import uuid
from typing import Any

from garrison.channel.backend import EnrolmentRefused
from garrison.console.services.auth import token_hash
from garrison.console.services.errors import NotFound
from garrison.console.store.open import Store
from garrison.pki import CertificateAuthority

ENROL_CLOCK_SKEW_S = 300.0
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


class DefenderService:
    def __init__(self, store: Store, ca: CertificateAuthority) -> None:
        self.store = store
        self.ca = ca

    def new_enrolment_token(self, created_by: str) -> str:
        """A fresh bundle credential; only its hash is stored, so each download mints a new one."""
        token = "enr_" + secrets.token_urlsafe(32)
        self.store.defenders.add_enrolment_token(token_hash(token), created_by)
        return token

    def enrol(
        self, token: str, nonce: str, timestamp: float, csr_pem: bytes, requested_id: str
    ) -> tuple[str, bytes]:
        now = time.time()
        if not self.store.defenders.enrolment_token_valid(token_hash(token)):
            raise EnrolmentRefused("enrolment token is unknown or revoked: download a fresh install bundle")
        if abs(now - timestamp) > ENROL_CLOCK_SKEW_S:
            raise EnrolmentRefused(
                f"enrolment timestamp is {now - timestamp:+.0f}s off the console clock (limit "
                f"{ENROL_CLOCK_SKEW_S:.0f}s): check the clock"
            )
        if not _NONCE_RE.match(nonce):
            raise EnrolmentRefused("enrolment nonce must be 16-128 URL-safe characters")
        if not self.store.defenders.claim_nonce(nonce, now, now - 2 * ENROL_CLOCK_SKEW_S):
            raise EnrolmentRefused("enrolment nonce was already used (replayed enrolment)")
        defender_id = self._choose_id(requested_id)
        cert = self.ca.sign_defender_csr(csr_pem, defender_id)  # ValueError on a bad CSR
        if self.store.defenders.exists(defender_id) is None:
            self.store.defenders.create(defender_id)
        return defender_id, cert

    def _choose_id(self, requested: str) -> str:
        if not requested or not _ID_RE.match(requested):
            return uuid.uuid4().hex
        row = self.store.defenders.exists(requested)
        if row is not None and row["revoked"]:
            # The old identity stays refused; a re-deployed instance comes back under a new one.
            return f"{requested[:180]}-{secrets.token_hex(4)}"
        return requested

    def list(self, **filters: Any) -> list[dict[str, Any]]:
        return [public(d) for d in self.store.defenders.list(**filters)]

    def get(self, defender_id: str) -> dict[str, Any]:
        d = self.store.defenders.get(defender_id)
        if d is None:
            raise NotFound(f"no defender {defender_id!r}")
        return public(d)

    def revoke(self, defender_id: str, by: str) -> None:
        if not self.store.defenders.revoke(defender_id):
            raise NotFound(f"no defender {defender_id!r} (or already removed)")
        self.store.mgmt.record(by, "defender.delete", defender_id)


def public(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "connected": bool(d["connected"]), "revoked": bool(d["revoked"])}
