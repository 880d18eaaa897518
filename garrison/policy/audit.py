"""Audit events: the wire format from defender (and scanner, CNAF) to console and its store."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AuditType = Literal[
    "process",
    "drift",
    "network",
    "listen",
    "dns",
    "fork_bomb",
    "port_scan",
    "bad_reputation",
    "kernel",
    "cnaf",
    "assurance",
    "defender",
    "privileges",
]
AuditEffect = Literal["alert", "prevent", "ban", "info"]
Severity = Literal["low", "medium", "high", "critical"]

SEVERITY_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}


class AuditEvent(BaseModel):
    """One decision taken by a defender. `id` is the at-least-once de-duplication key."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=8, max_length=64)
    time: float = Field(default_factory=time.time, description="UNIX seconds")
    defender_id: str = Field(default="", max_length=256)
    app_id: str = Field(default="", max_length=256)
    app_name: str = Field(default="", max_length=256)
    org: str = Field(default="", max_length=256)
    space: str = Field(default="", max_length=256)
    instance: int = 0
    type: AuditType
    rule: str = Field(default="", max_length=256)
    control: str = Field(default="", max_length=128)
    effect: AuditEffect
    severity: Severity = "medium"
    pid: int | None = None
    ppid: int | None = None
    exe: str | None = Field(default=None, max_length=4096)
    argv: list[str] | None = Field(default=None, max_length=256)
    cwd: str | None = Field(default=None, max_length=4096)
    dest_ip: str | None = Field(default=None, max_length=64)
    dest_port: int | None = Field(default=None, ge=0, le=65535)
    dest_name: str | None = Field(default=None, max_length=512)
    protocol: str | None = Field(default=None, max_length=16)
    message: str = Field(default="", max_length=4096)
    extra: dict[str, Any] = Field(default_factory=dict)
