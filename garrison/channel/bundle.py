"""The install bundle: everything a defender needs to find and trust the console, in one env var.

It is base64 of a small JSON document so a Cloud Foundry operator can paste it into
`cf set-env APP INSTALL_BUNDLE ...` without quoting trouble. Decoding errors say what is wrong in
terms of what the operator did (truncated paste, wrong value, old console), never a stack trace.
"""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

BUNDLE_VERSION = 1
ENV_VAR = "INSTALL_BUNDLE"


class BundleError(ValueError):
    """The install bundle is missing, garbled or incomplete; the message is meant for a CF operator."""


class InstallBundle(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = Field(ge=1)
    ca_pem: str = Field(min_length=1, description="console CA certificate the defender trusts")
    ws_address: str = Field(min_length=1, description="wss://host:port of the defender channel")
    console_url: str = Field(default="", description="https URL of the console API/UI")
    enrolment_token: str = Field(min_length=1, description="credential that lets a defender enrol once")

    @field_validator("ws_address")
    @classmethod
    def _ws_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("wss", "ws") or not parts.hostname:
            raise ValueError(f"must be a wss://host:port address, got {v!r}")
        return v

    @field_validator("ca_pem")
    @classmethod
    def _pem(cls, v: str) -> str:
        if "-----BEGIN CERTIFICATE-----" not in v:
            raise ValueError("is not a PEM certificate")
        return v


def encode_bundle(
    *, ca_pem: str | bytes, ws_address: str, enrolment_token: str, console_url: str = ""
) -> str:
    """Build the base64 text the console serves at /api/v1/defenders/install-bundle."""
    bundle = InstallBundle(
        version=BUNDLE_VERSION,
        ca_pem=ca_pem.decode() if isinstance(ca_pem, bytes) else ca_pem,
        ws_address=ws_address,
        console_url=console_url,
        enrolment_token=enrolment_token,
    )
    raw = json.dumps(bundle.model_dump(), separators=(",", ":")).encode()
    return base64.b64encode(raw).decode("ascii")


def decode_bundle(text: str | None) -> InstallBundle:
    """Parse an INSTALL_BUNDLE value; raise BundleError with an operator-readable reason."""
    if text is None or not text.strip():
        raise BundleError(
            f"{ENV_VAR} is not set: copy the install bundle from the console "
            "(GET /api/v1/defenders/install-bundle) into the app's environment"
        )
    compact = "".join(text.split())
    try:
        raw = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(
            f"{ENV_VAR} is not valid base64: it was probably truncated or altered when pasted; "
            "copy it again from the console"
        ) from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BundleError(
            f"{ENV_VAR} decodes to something that is not an install bundle (not JSON): "
            "copy it again from the console"
        ) from None
    if not isinstance(data, dict):
        raise BundleError(f"{ENV_VAR} is not an install bundle (expected a JSON object)")
    version = data.get("version")
    if isinstance(version, int) and version > BUNDLE_VERSION:
        raise BundleError(
            f"{ENV_VAR} has format version {version}; this defender understands up to {BUNDLE_VERSION}: "
            "upgrade the defender"
        )
    try:
        return InstallBundle.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'bundle'}: "
            + ("missing" if e["type"] == "missing" else e["msg"])
            for e in exc.errors()
        )
        raise BundleError(
            f"{ENV_VAR} is incomplete or invalid ({problems}): download a fresh bundle from the console"
        ) from None
