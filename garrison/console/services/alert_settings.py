"""Alert output settings (webhook, syslog): the wire model of /api/v1/settings/alerts."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from garrison.policy.audit import Severity

SECRET_MASK = "********"


class WebhookOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    url: str = Field(
        min_length=8, max_length=2048, description="http(s) URL receiving one JSON POST per audit"
    )
    secret: str = Field(
        default="", max_length=256, description="HMAC-SHA256 key for the X-Garrison-Signature header"
    )
    max_attempts: int = Field(default=5, ge=1, le=20)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return v


class SyslogOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=514, ge=1, le=65535)
    protocol: Literal["udp", "tcp"] = "udp"
    facility: int = Field(default=16, ge=0, le=23, description="16 = local0")


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_severity: Severity = "high"
    webhook: WebhookOutput | None = None
    syslog: SyslogOutput | None = None

    def masked(self) -> AlertSettings:
        if self.webhook is None or not self.webhook.secret:
            return self
        return self.model_copy(update={"webhook": self.webhook.model_copy(update={"secret": SECRET_MASK})})

    def keep_secret_from(self, old: AlertSettings) -> AlertSettings:
        """A PUT that sends back the masked secret keeps the stored one."""
        if self.webhook is not None and self.webhook.secret == SECRET_MASK:
            secret = old.webhook.secret if old.webhook is not None else ""
            return self.model_copy(update={"webhook": self.webhook.model_copy(update={"secret": secret})})
        return self
