"""Requests that differ only in a query string nothing reads share one detection result; anything
a detector reads in the query (or a finding that quotes it) keeps requests apart."""

from __future__ import annotations

from garrison.cnaf.engine import detection_key
from garrison.cnaf.firewall import Firewall
from garrison.cnaf.request import HttpRequest
from garrison.policy.audit import AuditEvent
from garrison.policy.cnaf import ATTACK_CLASSES, CnafControls

HEADERS = [("Host", "shop.example"), ("User-Agent", "Mozilla/5.0")]


def get(target: str, headers: list[tuple[str, str]] | None = None) -> HttpRequest:
    return HttpRequest("GET", target, headers=headers or HEADERS, peer_ip="192.0.2.7")


def test_plain_queries_share_a_key_and_readable_ones_do_not() -> None:
    key, shared = detection_key(get("/api/items?page=2&q=coffee+beans&sort=price"), True)
    assert shared and detection_key(get("/api/items?page=3&q=tea&sort=name"), True) == (key, True)
    assert detection_key(get("/api/other?page=3"), True)[0] != key
    assert detection_key(get("/api/items?page=3", [("Host", "other.example")]), True)[0] != key
    for target in (
        "/api/items?q=1%27+or+%271%27=%271",  # an encoding
        "/api/items?q=it's",  # a quote
        "/api/items?q=union+select+1",  # a SQL word of plain characters
        "/api/items?q=x--",  # a comment
        "/api/items?q=script",
        "/login?PHPSESSID=abc123",  # a session-id name: session fixation reads it
        "/login?jsessionid=1",
        "/a/../etc?page=1",  # a path that is not plain: CRS reads the whole URI
        "/a(b)?page=1",
    ):
        assert detection_key(get(target), True)[1] is False, target
    # CRS reads characters the own detectors do not (`a.b`, `ftp:`): shared only with CRS off
    assert detection_key(get("/f?file=a.b"), False)[1] is True
    assert detection_key(get("/f?file=a.b"), True)[1] is False


def _firewall(events: list[AuditEvent]) -> Firewall:
    controls = CnafControls(effects=dict.fromkeys(ATTACK_CLASSES, "prevent"), crs={"enabled": False})
    return Firewall(lambda: controls, events.append)


def test_a_cached_plain_query_does_not_hide_what_a_detector_reads() -> None:
    events: list[AuditEvent] = []
    fw = _firewall(events)
    assert fw.check(get("/login?page=1")).status is None
    assert fw.check(get("/login?page=2")).status is None
    assert fw.check(get("/login?PHPSESSID=abc123")).status == 403  # plain characters, no Referer
    assert fw.check(get("/login?q=1+union+select+password+from+users")).status == 403
    assert [e.control for e in events] == ["session_fixation", "sqli"]


def test_findings_that_quote_the_request_line_are_not_shared() -> None:
    events: list[AuditEvent] = []
    fw = _firewall(events)
    twice = [("Host", "a.example"), ("Host", "b.example")]
    for page in (1, 2, 1):
        assert fw.check(get(f"/p?page={page}", twice)).status == 403
    assert [e.extra["value"] for e in events] == [
        "GET /p?page=1 HTTP/1.1",
        "GET /p?page=2 HTTP/1.1",
        "GET /p?page=1 HTTP/1.1",
    ]
    assert {e.control for e in events} == {"protocol"}


def test_an_oversized_head_is_judged_per_request() -> None:
    events: list[AuditEvent] = []
    controls = CnafControls(effects={"protocol": "prevent"}, max_header_bytes=1024, crs={"enabled": False})
    fw = Firewall(lambda: controls, events.append)
    assert fw.check(get("/p?page=1")).status is None
    assert fw.check(get("/p?page=" + "1" * 1100)).status == 403
    assert fw.check(get("/p?page=2")).status is None
