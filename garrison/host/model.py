"""Wire formats of the host (cell) checks: what `garrison host` prints and what the console stores."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RuleOutcome = Literal["pass", "fail", "notapplicable", "notchecked", "notselected", "error", "unknown",
                      "informational", "fixed"]
HostEventType = Literal["fim", "access", "compliance"]


class RuleResult(BaseModel):
    """One XCCDF rule's outcome with what an operator needs to fix it."""

    id: str = Field(max_length=512)
    title: str = Field(default="", max_length=1024)
    result: RuleOutcome
    severity: str = Field(default="unknown", max_length=32)
    remediation: str = Field(default="", max_length=8192)


class CisReport(BaseModel):
    """A CIS benchmark run on a live host or a mounted root filesystem."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(max_length=256)
    root: str = Field(default="/", max_length=4096)
    profile: str = Field(max_length=256)
    datastream: str = Field(max_length=4096)
    benchmark: str = Field(default="", max_length=256)
    started: float = Field(default_factory=time.time)
    applicable: bool
    reason: str = Field(default="", max_length=2048, description="why the content does not apply, if so")
    score: float | None = Field(default=None, description="share of passing among pass+fail, 0-100")
    oscap_score: float | None = Field(default=None, description="XCCDF default score as oscap computes it")
    counts: dict[str, int] = Field(default_factory=dict)
    rules: list[RuleResult] = Field(default_factory=list, max_length=5000)

    def failed(self) -> list[RuleResult]:
        return [r for r in self.rules if r.result == "fail"]


class HostEvent(BaseModel):
    """One thing that happened on a cell: a file changed, somebody logged in, compliance drifted."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=8, max_length=64)
    time: float = Field(default_factory=time.time)
    host: str = Field(default="", max_length=256)
    type: HostEventType
    action: str = Field(max_length=64, description="e.g. modified, created, login, login_failed, sudo")
    severity: Literal["low", "medium", "high", "critical"] = "medium"
    path: str | None = Field(default=None, max_length=4096)
    user: str | None = Field(default=None, max_length=256)
    source: str | None = Field(default=None, max_length=256, description="remote address, tty or log")
    pid: int | None = None
    process: str | None = Field(default=None, max_length=4096)
    message: str = Field(default="", max_length=4096)
    extra: dict[str, Any] = Field(default_factory=dict)
