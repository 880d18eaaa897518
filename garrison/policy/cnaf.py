"""CNAF (application firewall) controls of a runtime rule.

Kept beside the runtime model so one rule carries every control for the apps it scopes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CnafEffect = Literal["disable", "alert", "prevent", "ban"]

ATTACK_CLASSES = (
    "sqli",
    "xss",
    "cmdi",
    "lfi",
    "rfi",
    "code_injection",
    "shellshock",
    "attack_tools",
    "protocol",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CnafException(_Strict):
    """Skip one attack class (or all, '*') on a path glob, optionally only for one parameter name."""

    path: str = Field(default="*", min_length=1, max_length=1024)
    param: str | None = Field(default=None, max_length=256)
    attack: str = Field(default="*", max_length=64)


class RateLimit(_Strict):
    burst: int = Field(default=100, ge=1, le=1_000_000, description="requests per second per client IP")
    average: int = Field(default=50, ge=1, le=1_000_000, description="requests per minute per client IP / 60")
    effect: CnafEffect = "prevent"


def _default_effects() -> dict[str, CnafEffect]:
    return dict.fromkeys(ATTACK_CLASSES, "alert")


class CnafControls(_Strict):
    enabled: bool = True
    effects: dict[str, CnafEffect] = Field(
        default_factory=_default_effects,
        description="attack class → effect",
    )
    exceptions: list[CnafException] = Field(default_factory=list, max_length=1000)
    rate_limit: RateLimit | None = None
    ban_duration_s: int = Field(default=300, ge=1, le=7 * 86400)
    trust_x_forwarded_for: bool = False
    max_header_bytes: int = Field(default=16384, ge=1024, le=1 << 20)
    max_body_inspect_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
