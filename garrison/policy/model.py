"""Runtime policy model: the one definition shared by console, defender and CLI.

A policy is an ordered list of rules; the first rule whose scope matches a defender applies
(Prisma semantics). Every model forbids unknown fields so a typo in a policy is a 422 naming
the field instead of a silently ignored control.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from garrison.policy.cnaf import CnafControls

Effect = Literal["disable", "alert", "prevent"]
LearnableEffect = Literal["disable", "alert", "prevent", "learn"]
"""`learn`: the control records what the app does (a profile for the console) instead of enforcing
its allow-list; its deny entries still alert (never block). See garrison/policy/learning.py."""

_PORT_MAX = 65535


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


def _check_globs(values: list[str]) -> list[str]:
    for v in values:
        if not v or len(v) > 512 or "\x00" in v:
            raise ValueError(f"invalid pattern {v!r}: must be 1..512 characters without NUL")
    return values


class Scope(_Strict):
    """Which defenders a rule applies to; each list is a set of shell-style globs (`*` = any)."""

    orgs: list[str] = Field(default_factory=lambda: ["*"], max_length=256)
    spaces: list[str] = Field(default_factory=lambda: ["*"], max_length=256)
    apps: list[str] = Field(default_factory=lambda: ["*"], max_length=256, description="CF app-name globs")
    app_ids: list[str] = Field(
        default_factory=lambda: ["*"], max_length=256, description="DEFENDER_APP_ID / CF app-guid globs"
    )

    _v = field_validator("orgs", "spaces", "apps", "app_ids")(classmethod(lambda cls, v: _check_globs(v)))


class ArgvPattern(_Strict):
    """A process matched by its executable path glob *and* a regex searched in its argv joined by spaces."""

    path: str = Field(default="*", min_length=1, max_length=512)
    args: str = Field(
        min_length=1,
        max_length=1024,
        description="Python regex searched in ' '.join(argv[1:])",
        json_schema_extra={"format": "regex"},
    )

    @field_validator("args")
    @classmethod
    def _regex_compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
        return v


ProcessPattern = Annotated[str, Field(min_length=1, max_length=512)] | ArgvPattern


class ForkBombGuard(_Strict):
    max_procs: int = Field(
        default=512, ge=1, le=1_000_000, description="cap on live processes of the app tree"
    )
    max_forks_per_s: int = Field(default=200, ge=1, le=1_000_000, description="clone/fork rate over 1 s")


class ProcessControls(_Strict):
    effect: LearnableEffect = "alert"
    allow: list[ProcessPattern] = Field(
        default_factory=list, max_length=4096, description="if non-empty, anything else is a violation"
    )
    deny: list[ProcessPattern] = Field(default_factory=list, max_length=4096)
    drift_prevention: bool = False
    fork_bomb_guard: ForkBombGuard | None = None


class PortRange(_Strict):
    start: int = Field(ge=0, le=_PORT_MAX)
    end: int = Field(ge=0, le=_PORT_MAX)

    @model_validator(mode="after")
    def _ordered(self) -> PortRange:
        if self.end < self.start:
            raise ValueError(f"port range end {self.end} is below start {self.start}")
        return self

    def __contains__(self, port: int) -> bool:
        return self.start <= port <= self.end


def parse_ports(spec: str) -> list[PortRange]:
    """'80', '80-443', '80,443,8000-9000', '*' → ranges. Raises ValueError naming the bad part."""
    spec = spec.strip()
    if spec in ("", "*"):
        return [PortRange(start=0, end=_PORT_MAX)]
    out: list[PortRange] = []
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", part)
        if not m:
            raise ValueError(f"invalid port or port range {part!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if lo > _PORT_MAX or hi > _PORT_MAX:
            raise ValueError(f"port out of range in {part!r}")
        out.append(PortRange(start=lo, end=hi))
    return out


class NetTarget(_Strict):
    """An IP/CIDR (v4 or v6) with optional ports; also accepted as 'CIDR', 'CIDR:PORTS' or '[v6]:PORTS'."""

    cidr: str = Field(default="0.0.0.0/0", description="IP or CIDR; '*' means any address of either family")
    ports: list[PortRange] = Field(
        default_factory=lambda: [PortRange(start=0, end=_PORT_MAX)], max_length=256
    )
    protocol: Literal["any", "tcp", "udp"] = "any"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: object) -> object:
        if isinstance(data, str):
            s = data.strip()
            ports = "*"
            if s.startswith("["):
                host, _, rest = s[1:].partition("]")
                if rest.startswith(":"):
                    ports = rest[1:]
                elif rest:
                    raise ValueError(f"invalid target {data!r}")
                s = host
            elif s.count(":") == 1:
                s, ports = s.split(":")
            return {"cidr": s or "*", "ports": [p.model_dump() for p in parse_ports(ports)]}
        if isinstance(data, dict) and isinstance(data.get("ports"), str):
            data = dict(data)
            data["ports"] = [p.model_dump() for p in parse_ports(data["ports"])]
        return data

    @field_validator("cidr")
    @classmethod
    def _valid_cidr(cls, v: str) -> str:
        if v == "*":
            return v
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError as exc:
            raise ValueError(f"invalid IP address or CIDR {v!r}") from exc
        return v

    def matches(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, proto: str) -> bool:
        if self.protocol != "any" and proto != self.protocol:
            return False
        if not any(port in r for r in self.ports):
            return False
        if self.cidr == "*":
            return True
        net = ipaddress.ip_network(self.cidr, strict=False)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None and net.version == 4:
            ip = ip.ipv4_mapped
        return net.version == ip.version and ip in net


class OutboundControls(_Strict):
    allow: list[NetTarget] = Field(
        default_factory=list, max_length=4096, description="if non-empty, other destinations are violations"
    )
    deny: list[NetTarget] = Field(default_factory=list, max_length=4096)


class ListeningControls(_Strict):
    effect: LearnableEffect | None = Field(
        default=None, description="overrides network.effect for listening ports (null: network.effect)"
    )
    allow: list[PortRange] = Field(
        default_factory=list, max_length=256, description="if non-empty, only these"
    )
    deny: list[PortRange] = Field(default_factory=list, max_length=256)

    @model_validator(mode="before")
    @classmethod
    def _port_strings(cls, data: object) -> object:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("allow", "deny"):
                items = data.get(key)
                if isinstance(items, list):
                    conv: list[object] = []
                    for it in items:
                        if isinstance(it, (str, int)) and not isinstance(it, bool):
                            conv.extend(p.model_dump() for p in parse_ports(str(it)))
                        else:
                            conv.append(it)
                    data[key] = conv
        return data


class PortScanDetection(_Strict):
    enabled: bool = True
    threshold: int = Field(default=50, ge=2, le=65536, description="distinct (host, port) pairs per window")
    window_s: float = Field(default=10.0, gt=0, le=3600)


class NetworkControls(_Strict):
    effect: LearnableEffect = "alert"
    outbound: OutboundControls = Field(default_factory=OutboundControls)
    listening: ListeningControls = Field(default_factory=ListeningControls)
    port_scan: PortScanDetection | None = None
    bad_reputation_ips: list[str] = Field(default_factory=list, max_length=100_000)

    @field_validator("bad_reputation_ips")
    @classmethod
    def _valid_ips(cls, v: list[str]) -> list[str]:
        for i, item in enumerate(v):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"bad_reputation_ips[{i}]: invalid IP or CIDR {item!r}") from exc
        return v


class DnsControls(_Strict):
    effect: LearnableEffect = "alert"
    allow: list[str] = Field(
        default_factory=list, max_length=4096, description="domain globs; non-empty = allow-list mode"
    )
    deny: list[str] = Field(default_factory=list, max_length=4096)

    @field_validator("allow", "deny")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        for d in v:
            if not re.fullmatch(r"[A-Za-z0-9*?_.\-]{1,253}", d):
                raise ValueError(f"invalid domain pattern {d!r}")
        return [d.lower().rstrip(".") for d in v]


DANGEROUS_CAPABILITIES = (
    "CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_DAC_READ_SEARCH", "CAP_DAC_OVERRIDE", "CAP_SYS_BOOT", "CAP_BPF", "CAP_PERFMON", "CAP_SYS_TIME",
    "CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_SYSLOG", "CAP_SETFCAP", "CAP_LINUX_IMMUTABLE",
)


class PrivilegeControls(_Strict):
    """Container privileges (cell defender): what an app container may have that weakens isolation.
    `prevent` stops the container's processes; `alert` reports it."""

    effect: Effect = "alert"
    allow_privileged: bool = Field(default=False, description="uid 0 in the container is the host's root")
    allow_host_network: bool = False
    allow_host_pid: bool = False
    allow_host_ipc: bool = False
    allow_host_mount: bool = False
    denied_capabilities: list[str] = Field(
        default_factory=lambda: list(DANGEROUS_CAPABILITIES), max_length=64,
        description="effective capabilities an app process must not hold",
    )

    @field_validator("denied_capabilities")
    @classmethod
    def _cap_names(cls, v: list[str]) -> list[str]:
        out = [c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper() for c in v]
        for c in out:
            if not re.fullmatch(r"CAP_[A-Z_]{2,32}", c):
                raise ValueError(f"invalid capability name {c!r}")
        return out


class Rule(_Strict):
    name: str = Field(min_length=1, max_length=200)
    disabled: bool = False
    scope: Scope = Field(default_factory=Scope)
    processes: ProcessControls = Field(default_factory=ProcessControls)
    network: NetworkControls = Field(default_factory=NetworkControls)
    dns: DnsControls = Field(default_factory=DnsControls)
    cnaf: CnafControls | None = None
    privileges: PrivilegeControls = Field(default_factory=PrivilegeControls)
    fail_open: bool = Field(
        default=False, description="start the app unprotected if the defender cannot enforce (else refuse)"
    )


class RuntimePolicy(_Strict):
    """The ordered rule list as stored by the console and pushed to defenders."""

    rules: list[Rule] = Field(default_factory=list, max_length=1000)
    revision: int = Field(
        default=0, ge=0, strict=True, description="set by the console; bumped on every change"
    )

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, v: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for r in v:
            if r.name in seen:
                raise ValueError(f"duplicate rule name {r.name!r}")
            seen.add(r.name)
        return v
