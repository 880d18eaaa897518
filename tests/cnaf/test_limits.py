"""Rate limiting, bans and verdicts with an injected clock (no sleeping)."""

from __future__ import annotations

from garrison.cnaf.firewall import Firewall, client_ip
from garrison.cnaf.limits import BanList, RateLimiter
from garrison.cnaf.request import HttpRequest
from garrison.policy.audit import AuditEvent
from garrison.policy.cnaf import CnafControls, RateLimit


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_average() -> None:
    clock = Clock()
    rl = RateLimiter(clock)
    assert all(rl.allow("a", burst=10, average=2) for _ in range(10))
    assert not rl.allow("a", burst=10, average=2)
    assert rl.allow("b", burst=10, average=2)  # per client
    clock.t += 1.0  # burst bucket refilled; average bucket still holds 110 tokens
    assert all(rl.allow("a", burst=10, average=2) for _ in range(10))
    # sustained load: 10 req/s for a minute drains the 120-token average bucket (2/s * 60)
    allowed = 0
    for _ in range(60):
        clock.t += 1.0
        allowed += sum(rl.allow("a", burst=10, average=2) for _ in range(10))
    assert allowed < 60 * 10 * 0.5


def test_ban_expires() -> None:
    clock = Clock()
    bans = BanList(clock)
    bans.ban("192.0.2.1", 30)
    assert bans.is_banned("192.0.2.1") and not bans.is_banned("192.0.2.2")
    clock.t += 31
    assert not bans.is_banned("192.0.2.1")
    assert len(bans) == 0


def test_client_ip_trusts_forwarded_for_only_when_told() -> None:
    r = HttpRequest("GET", "/", headers=[("X-Forwarded-For", "203.0.113.1, 10.0.0.1")], peer_ip="10.0.0.9")
    assert client_ip(r, trust_xff=False) == "10.0.0.9"
    assert client_ip(r, trust_xff=True) == "203.0.113.1"
    bad = HttpRequest("GET", "/", headers=[("X-Forwarded-For", "not-an-ip")], peer_ip="10.0.0.9")
    assert client_ip(bad, trust_xff=True) == "10.0.0.9"


def test_verdicts_and_audit_events() -> None:
    clock = Clock()
    events: list[AuditEvent] = []
    controls = CnafControls(
        effects={"sqli": "ban", "xss": "alert"},
        ban_duration_s=60,
        rate_limit=RateLimit(burst=1000, average=1000),
    )
    fw = Firewall(lambda: controls, events.append, clock)
    xss = HttpRequest(
        "GET",
        "/?q=%3Cscript%3E",
        headers=[("Host", "a"), ("Authorization", "Bearer s3cret")],
        peer_ip="192.0.2.5",
    )
    v = fw.check(xss)
    assert v.status is None and events[-1].effect == "alert"
    assert events[-1].extra["headers"]["Authorization"] == "<redacted>"
    sqli = HttpRequest("GET", "/?id=1%20OR%201=1", headers=[("Host", "a")], peer_ip="192.0.2.5")
    v = fw.check(sqli)
    assert v.status == 403 and events[-1].effect == "ban" and events[-1].id.encode() in v.response
    assert events[-1].extra["value"] == "1 OR 1=1" and events[-1].extra["field"] == "query:id"
    assert fw.check(HttpRequest("GET", "/fine", headers=[("Host", "a")], peer_ip="192.0.2.5")).status == 403
    clock.t += 61
    assert fw.check(HttpRequest("GET", "/fine", headers=[("Host", "a")], peer_ip="192.0.2.5")).status is None


def test_long_values_are_truncated_in_audits() -> None:
    events: list[AuditEvent] = []
    fw = Firewall(lambda: CnafControls(effects={"xss": "prevent"}), events.append)
    fw.check(
        HttpRequest("GET", "/?q=%3Cscript%3E" + "a" * 5000, headers=[("Host", "a")], peer_ip="192.0.2.5")
    )
    assert len(events[0].extra["value"]) <= 256
