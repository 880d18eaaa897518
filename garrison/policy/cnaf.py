"""CNAF (application firewall) controls of a runtime rule.

Kept beside the runtime model so one rule carries every control for the apps it scopes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    "session_fixation",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class CnafException(_Strict):
    """Skip one attack class (or all, '*') on a path glob, optionally only for one parameter name."""

    path: str = Field(default="*", min_length=1, max_length=1024)
    param: str | None = Field(default=None, max_length=256)
    attack: str = Field(default="*", max_length=64)

    @field_validator("attack")
    @classmethod
    def _known_attack(cls, v: str) -> str:
        if v != "*" and v not in ATTACK_CLASSES:
            raise ValueError(
                f"unknown attack class {v!r}; expected '*' or one of {', '.join(ATTACK_CLASSES)}"
            )
        return v


class RateLimit(_Strict):
    burst: int = Field(default=100, ge=1, le=1_000_000, description="requests per second per client IP")
    average: int = Field(
        default=50,
        ge=1,
        le=1_000_000,
        description="sustained requests per second per client IP, averaged over a 60 s window",
    )
    effect: CnafEffect = "prevent"


class CrsSettings(_Strict):
    """How the OWASP CRS rules (when installed) score a request, as CRS's own anomaly mode does."""

    enabled: bool = True
    paranoia_level: int = Field(default=3, ge=1, le=4, description="CRS rules up to this level run")
    anomaly_threshold: int = Field(
        default=5, ge=2, le=1000, description="sum of rule severities (critical 5 … notice 2) that blocks"
    )
    disabled_rules: list[int] = Field(default_factory=list, max_length=10000, description="CRS rule ids")
    default_exclusions: bool = Field(
        default=True,
        description="also skip the CRS rules Garrison found false-positive-prone (docs/cnaf.md)",
    )


class ProtocolSettings(_Strict):
    """Protocol checks whose right answer depends on the site's framework and clients."""

    method_override: Literal["deny", "forms", "allow"] = Field(
        default="forms",
        description=(
            "`_method` parameters and X-HTTP-Method-Override headers: 'forms' lets a POST become PUT, "
            "PATCH or DELETE (Rails, Laravel and Spring forms) and refuses every other override (in the "
            "query string, on GET, to TRACE/CONNECT/WebDAV/unknown methods); 'deny' refuses all; 'allow' none"
        ),
    )
    utf8_arguments: bool = Field(
        default=True,
        description="refuse percent-encoded parameters that are not valid UTF-8 (overlong or cut "
        "sequences); switch off for sites whose pages still submit forms in a legacy charset",
    )


def _default_effects() -> dict[str, CnafEffect]:
    return dict.fromkeys(ATTACK_CLASSES, "alert")


class CnafControls(_Strict):
    enabled: bool = True
    effects: dict[str, CnafEffect] = Field(
        default_factory=_default_effects,
        description="attack class → effect; classes left out default to 'alert'",
    )
    exceptions: list[CnafException] = Field(default_factory=list, max_length=1000)
    rate_limit: RateLimit | None = None
    ban_duration_s: int = Field(default=300, ge=1, le=7 * 86400)
    trust_x_forwarded_for: bool = False
    max_header_bytes: int = Field(default=16384, ge=1024, le=1 << 20)
    max_body_inspect_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    protocol: ProtocolSettings = Field(default_factory=lambda: ProtocolSettings())
    crs: CrsSettings = Field(
        default_factory=lambda: CrsSettings(),
        description="OWASP CRS rules loaded from the installed rule set (see docs/cnaf.md)",
    )

    @field_validator("effects")
    @classmethod
    def _known_classes(cls, v: dict[str, CnafEffect]) -> dict[str, CnafEffect]:
        unknown = sorted(set(v) - set(ATTACK_CLASSES))
        if unknown:
            raise ValueError(f"unknown attack class(es) {unknown}; expected {', '.join(ATTACK_CLASSES)}")
        return {**_default_effects(), **v}

    def effect_for(self, attack: str) -> CnafEffect:
        """Effect of one attack class; a disabled CNAF reports 'disable' for every class."""
        if not self.enabled:
            return "disable"
        return self.effects.get(attack, "alert")
