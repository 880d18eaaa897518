"""Turns findings into a verdict: forward, alert, 403 with an event id, 429, or ban the client.

Holds the only mutable state of the CNAF (bans, rate buckets) and builds the audit events.
Controls are read through a getter on every request so a policy push applies at once.
"""

from __future__ import annotations

import html
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from garrison.cnaf import crs
from garrison.cnaf.engine import VALUE_AUDIT_LIMIT, Finding, detection_key, inspect
from garrison.cnaf.limits import BanList, RateLimiter
from garrison.cnaf.request import HttpRequest
from garrison.policy.audit import AuditEvent, Severity
from garrison.policy.cnaf import CnafControls, CnafEffect

AuditSink = Callable[[AuditEvent], None]
ControlsGetter = Callable[[], CnafControls | None]

_RANK: dict[str, int] = {"disable": 0, "alert": 1, "prevent": 2, "ban": 3}
_SEVERITY: dict[str, Severity] = {
    "sqli": "high",
    "cmdi": "critical",
    "code_injection": "critical",
    "shellshock": "critical",
    "rfi": "high",
    "lfi": "high",
    "xss": "medium",
    "attack_tools": "low",
    "protocol": "medium",
    "session_fixation": "high",
    "rate_limit": "low",
    "banned": "low",
}
_REDACT = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_RATE_AUDIT_EVERY_S = 10.0
_RECENT_MAX = 4096
_RECENT_HEAD_MAX = 2048  # bounds the cache to ~8 MiB


@dataclass(slots=True)
class Verdict:
    """`status` None means forward to the app; otherwise answer with `response` and close."""

    status: int | None = None
    response: bytes = b""
    events: list[AuditEvent] = field(default_factory=list)


def client_ip(req: HttpRequest, trust_xff: bool) -> str:
    """The peer address, or the first X-Forwarded-For hop when the rule trusts the proxy in front."""
    if trust_xff:
        xff = req.header("x-forwarded-for")
        if xff:
            first = xff.split(",", 1)[0].strip()
            try:
                return str(ipaddress.ip_address(first))
            except ValueError:
                pass
    return req.peer_ip


def error_response(status: int, reason: str, event_id: str = "") -> bytes:
    title = {
        400: "Bad Request",
        403: "Forbidden",
        408: "Request Timeout",
        429: "Too Many Requests",
        431: "Request Header Fields Too Large",
        502: "Bad Gateway",
    }.get(status, "Error")
    ref = f"<p>Event ID: <code>{html.escape(event_id)}</code></p>" if event_id else ""
    body = (
        f"<!doctype html><html><head><title>{status} {title}</title></head><body>"
        f"<h1>{status} {title}</h1><p>{html.escape(reason)}</p>{ref}</body></html>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {title}\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n"
        + (f"X-Garrison-Event-Id: {event_id}\r\n" if event_id else "")
        + "\r\n"
    )
    return head.encode() + body


class Firewall:
    def __init__(
        self,
        controls_getter: ControlsGetter,
        audit: AuditSink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.controls_getter = controls_getter
        self.audit = audit
        self.bans = BanList(clock)
        self.rates = RateLimiter(clock)
        self._clock = clock
        self._last_rate_audit: dict[str, float] = {}
        # detection key -> (controls, CRS rule set, findings): a policy change or CRS finishing its load
        # (the rule set appears) makes an entry stale
        self._recent: OrderedDict[
            tuple[object, ...], tuple[CnafControls, crs.CrsRuleSet | None, list[Finding]]
        ] = OrderedDict()

    # -- audit helpers -------------------------------------------------------------------------
    def _event(
        self,
        req: HttpRequest,
        ip: str,
        control: str,
        effect: CnafEffect,
        message: str,
        extra: dict[str, object] | None = None,
    ) -> AuditEvent:
        headers = {
            k: ("<redacted>" if k.lower() in _REDACT else v[:VALUE_AUDIT_LIMIT]) for k, v in req.headers[:64]
        }
        ev = AuditEvent(
            type="cnaf",
            control=control,
            effect="alert" if effect == "disable" else effect,
            severity=_SEVERITY.get(control, "medium"),
            dest_ip=ip[:64] or None,
            protocol="http",
            message=message[:4096],
            extra={
                "attack": control,
                "client_ip": ip,
                "request_line": req.request_line[:2048],
                "headers": headers,
                **(extra or {}),
            },
        )
        return ev

    def _emit(self, events: list[AuditEvent]) -> None:
        for ev in events:
            self.audit(ev)

    # -- decisions -----------------------------------------------------------------------------
    def check(self, req: HttpRequest) -> Verdict:
        """Full decision for a request whose head (and inspectable body prefix) is known."""
        controls = self.controls_getter()
        if controls is None or not controls.enabled:
            return Verdict()
        ip = client_ip(req, controls.trust_x_forwarded_for)
        if ip and self.bans.is_banned(ip):
            return Verdict(403, error_response(403, "Your address is temporarily banned."))
        if controls.rate_limit is not None and ip:
            rl = controls.rate_limit
            if not self.rates.allow(ip, rl.burst, rl.average):
                return self._rate_limited(req, ip, controls)
        findings = self._inspect(req, controls)
        if not findings:
            return Verdict()
        return self._apply(req, ip, controls, findings)

    def _inspect(self, req: HttpRequest, controls: CnafControls) -> list[Finding]:
        """Detection is a pure function of the request, so identical body-less requests (health checks,
        polling, assets) reuse the previous result, and so do requests that differ only in a query
        string nothing reads (`detection_key`); bans, rate limits and audits still run every time."""
        if req.body:
            return inspect(req, controls)
        head = len(req.target)
        for k, v in req.headers:
            head += len(k) + len(v) + 4
        if head > _RECENT_HEAD_MAX or head > controls.max_header_bytes:  # (an oversized head is a finding)
            return inspect(req, controls)
        rules = crs.current() if controls.crs.enabled else None
        key, shared = detection_key(req, rules is not None)
        hit = self._recent.get(key)
        if hit is not None and hit[0] is controls and hit[1] is rules:
            return hit[2]
        findings = inspect(req, controls)
        if shared and findings:
            return findings  # findings quote the request line or target: not shared between targets
        if len(self._recent) >= _RECENT_MAX:
            self._recent.popitem(last=False)  # O(1); deleting a plain dict's first key is not
        self._recent[key] = (controls, rules, findings)
        return findings

    def _apply(self, req: HttpRequest, ip: str, controls: CnafControls, findings: list[Finding]) -> Verdict:
        events: list[AuditEvent] = []
        worst: CnafEffect = "alert"
        blocking_id = ""
        for f in findings:
            effect = controls.effect_for(f.attack)
            if effect == "disable":
                continue
            ev = self._event(
                req,
                ip,
                f.attack,
                effect,
                f"{f.reason} in {f.field}",
                {
                    "field": f.field,
                    "value": f.value,
                    "reason": f.reason,
                    "body_truncated": req.body_truncated,
                },
            )
            if effect == "ban":
                ev.extra["ban_duration_s"] = controls.ban_duration_s
            events.append(ev)
            if _RANK[effect] > _RANK[worst]:
                worst = effect
            if effect in ("prevent", "ban") and not blocking_id:
                blocking_id = ev.id
        if worst == "ban" and ip:
            self.bans.ban(ip, controls.ban_duration_s)
        self._emit(events)
        if worst in ("prevent", "ban"):
            reason = "The request was blocked by the application firewall."
            return Verdict(403, error_response(403, reason, blocking_id), events)
        return Verdict(None, b"", events)

    def _rate_limited(self, req: HttpRequest, ip: str, controls: CnafControls) -> Verdict:
        assert controls.rate_limit is not None
        effect = controls.rate_limit.effect
        if effect == "disable":
            return Verdict()
        now = self._clock()
        events: list[AuditEvent] = []
        if effect == "ban" or now - self._last_rate_audit.get(ip, -1e9) >= _RATE_AUDIT_EVERY_S:
            if len(self._last_rate_audit) > 10_000:
                self._last_rate_audit.clear()
            self._last_rate_audit[ip] = now
            rl = controls.rate_limit
            events.append(
                self._event(
                    req,
                    ip,
                    "rate_limit",
                    effect,
                    f"rate limit exceeded (burst {rl.burst}/s, average {rl.average}/s)",
                    {"burst": rl.burst, "average": rl.average},
                )
            )
        if effect == "ban":
            self.bans.ban(ip, controls.ban_duration_s)
        self._emit(events)
        if effect == "alert":
            return Verdict(None, b"", events)
        eid = events[0].id if events else ""
        status = 403 if effect == "ban" else 429
        resp = error_response(status, "Too many requests; slow down.", eid)
        if status == 429:
            resp = resp.replace(b"\r\nConnection: close", b"\r\nRetry-After: 1\r\nConnection: close", 1)
        return Verdict(status, resp, events)

    def protocol_error(self, req: HttpRequest, reason: str, status: int = 400) -> Verdict:
        """A request the strict parser cannot frame is always refused; the effect decides audit and ban."""
        controls = self.controls_getter()
        if controls is None or not controls.enabled:
            return Verdict(status, error_response(status, reason))
        ip = client_ip(req, controls.trust_x_forwarded_for)
        effect = controls.effect_for("protocol")
        events: list[AuditEvent] = []
        eid = ""
        if effect != "disable":
            shown: CnafEffect = "ban" if effect == "ban" else "prevent"
            ev = self._event(
                req,
                ip,
                "protocol",
                shown,
                reason,
                {"field": "request", "value": req.request_line[:256], "reason": reason},
            )
            events.append(ev)
            eid = ev.id
            if effect == "ban" and ip:
                self.bans.ban(ip, controls.ban_duration_s)
        self._emit(events)
        return Verdict(status, error_response(status, reason, eid), events)

    def is_banned(self, ip: str) -> bool:
        return bool(ip) and self.bans.is_banned(ip)
