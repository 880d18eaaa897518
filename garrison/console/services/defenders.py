"""Defender lifecycle: enrolment credentials, enrolment checks, listing, revocation."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from garrison.channel.backend import EnrolmentRefused
from garrison.channel.protocol import AppIdentity, DefenderType
from garrison.console.services.auth import token_hash
from garrison.console.services.errors import NotFound
from garrison.console.store.open import Store
from garrison.pki import CertificateAuthority

ENROL_CLOCK_SKEW_S = 300.0
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]+")
MAX_PREFIX = 120
SCOPE_KEYS = ("org", "space", "app", "app_guid")
TYPE_KEY = "defender_type"
"""in a token's scope: `cell` for bundles made for cell defenders (absent = app-embedded)"""
_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


class DefenderService:
    def __init__(self, store: Store, ca: CertificateAuthority) -> None:
        self.store = store
        self.ca = ca

    def new_enrolment_token(
        self, created_by: str, scope: dict[str, str] | None = None, *, defender_type: DefenderType = "app-embedded"
    ) -> str:
        """A fresh bundle credential; only its hash is stored, so each download mints a new one.

        `scope` ({org, space, app, app_guid}, each optional) limits which app instances the bundle
        can enrol: a defender whose claimed identity does not match is refused. A `cell` bundle enrols
        cell defenders only (they report for every app on their cell), and only a cell bundle does."""
        token = "enr_" + secrets.token_urlsafe(32)
        clean = {k: v for k, v in (scope or {}).items() if k in SCOPE_KEYS and v}
        if defender_type == "cell":
            clean = {TYPE_KEY: "cell"}
        self.store.defenders.add_enrolment_token(token_hash(token), created_by, clean)
        return token

    def enrol(
        self,
        token: str,
        nonce: str,
        timestamp: float,
        csr_pem: bytes,
        requested_id: str,
        identity: AppIdentity | None = None,
        defender_type: DefenderType = "app-embedded",
    ) -> tuple[str, bytes]:
        now = time.time()
        tok = self.store.defenders.enrolment_token(token_hash(token))
        if tok is None:
            raise EnrolmentRefused("enrolment token is unknown or revoked: download a fresh install bundle")
        if abs(now - timestamp) > ENROL_CLOCK_SKEW_S:
            raise EnrolmentRefused(
                f"enrolment timestamp is {now - timestamp:+.0f}s off the console clock (limit "
                f"{ENROL_CLOCK_SKEW_S:.0f}s): check the clock"
            )
        if not _NONCE_RE.match(nonce):
            raise EnrolmentRefused("enrolment nonce must be 16-128 URL-safe characters")
        claim = identity or AppIdentity()
        _check_type(tok["scope"], defender_type)
        if defender_type == "cell":
            claim = AppIdentity()  # a cell's workloads come and go; its own id carries no app
        _check_scope({k: v for k, v in tok["scope"].items() if k != TYPE_KEY}, claim)
        fingerprint = self.ca.csr_key_fingerprint(csr_pem)  # ValueError on a bad CSR
        if not self.store.defenders.claim_nonce(nonce, now, now - 2 * ENROL_CLOCK_SKEW_S):
            raise EnrolmentRefused("enrolment nonce was already used (replayed enrolment)")
        try:
            defender_id = self.store.defenders.register(
                id_prefix(requested_id, claim), fingerprint, claim.model_dump(), tok["id"], defender_type
            )
        except PermissionError as exc:
            raise EnrolmentRefused(f"{exc}: enrol with a new key") from None
        return defender_id, self.ca.sign_defender_csr(csr_pem, defender_id)

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
    out = {k: v for k, v in d.items() if k not in ("key_fingerprint", "token_id")}
    return {**out, "connected": bool(d["connected"]), "revoked": bool(d["revoked"])}


def id_prefix(requested: str, claim: AppIdentity) -> str:
    """The readable part of a defender id: what the defender asked for (`<app>-<instance>`), else
    built from its app identity; the console appends the key fingerprint (see DefenderStore.register)."""
    text = requested or (f"{claim.app_name}-{claim.instance}" if claim.app_name else "defender")
    text = _UNSAFE.sub("-", text).strip("-._:")[:MAX_PREFIX]
    return text if _ID_RE.match(text) else "defender"


def _check_type(scope: dict[str, str], defender_type: str) -> None:
    bundle_type = scope.get(TYPE_KEY, "app-embedded")
    if bundle_type != defender_type:
        raise EnrolmentRefused(
            f"this install bundle is for {bundle_type} defenders, not {defender_type}: download a "
            + ("cell bundle (Deploy page, Diego cells)" if defender_type == "cell" else "bundle for apps")
        )


def _check_scope(scope: dict[str, str], claim: AppIdentity) -> None:
    """A scoped bundle enrols only the org/space/app it was made for (issue 10 #1)."""
    claimed = {"org": claim.org, "space": claim.space, "app": claim.app_name, "app_guid": claim.app_guid}
    wrong = [f"{k} {claimed[k]!r} (bundle is for {v!r})" for k, v in scope.items() if claimed.get(k) != v]
    if wrong:
        raise EnrolmentRefused(
            "this install bundle is scoped to another app: "
            + ", ".join(wrong)
            + "; download a bundle for this app"
        )
