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
MAX_FALLBACKS = 16


class BundleError(ValueError):
    """The install bundle is missing, garbled or incomplete; the message is meant for a CF operator."""


class InstallBundle(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = Field(ge=1)
    ca_pem: str = Field(min_length=1, description="console CA certificate the defender trusts")
    ws_address: str = Field(min_length=1, description="wss://host:port of the defender channel")
    console_url: str = Field(default="", description="https URL of the console API/UI")
    enrolment_token: str = Field(min_length=1, description="credential that lets a defender enrol once")
    ws_fallbacks: tuple[str, ...] = Field(
        default=(),
        max_length=MAX_FALLBACKS,
        description="other console replicas' channel addresses, tried in turn when one fails",
    )

    @field_validator("ws_address")
    @classmethod
    def _ws_url(cls, v: str) -> str:
        return _ws_url(v)

    @field_validator("ws_fallbacks")
    @classmethod
    def _ws_urls(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_ws_url(a) for a in v)

    @property
    def ws_addresses(self) -> tuple[str, ...]:
        """Every console address, the primary first, without repeats."""
        return tuple(dict.fromkeys((self.ws_address, *self.ws_fallbacks)))


def ws_addresses_from_env(text: str | None) -> tuple[str, ...]:
    """`GARRISON_CONSOLE_WS_ADDRESSES`: comma-separated wss:// addresses put in every bundle."""
    listed = tuple(a.strip() for a in (text or "").split(",") if a.strip())
    try:
        return tuple(_ws_url(a) for a in listed)[:MAX_FALLBACKS]
    except ValueError as exc:
        raise ValueError(f"GARRISON_CONSOLE_WS_ADDRESSES: {exc}") from None


def _ws_url(v: str) -> str:
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
    *,
    ca_pem: str | bytes,
    ws_address: str,
    enrolment_token: str,
    console_url: str = "",
    ws_fallbacks: tuple[str, ...] = (),
) -> str:
    """Build the base64 text the console serves at /api/v1/defenders/install-bundle."""
    bundle = InstallBundle(
        version=BUNDLE_VERSION,
        ca_pem=ca_pem.decode() if isinstance(ca_pem, bytes) else ca_pem,
        ws_address=ws_address,
        console_url=console_url,
        enrolment_token=enrolment_token,
        ws_fallbacks=tuple(a for a in dict.fromkeys(ws_fallbacks) if a != ws_address)[:MAX_FALLBACKS],
    )
    # Without fallbacks the bundle is what older defenders knew (they ignore the field anyway).
    data = bundle.model_dump(exclude=set() if bundle.ws_fallbacks else {"ws_fallbacks"})
    raw = json.dumps(data, separators=(",", ":")).encode()
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
