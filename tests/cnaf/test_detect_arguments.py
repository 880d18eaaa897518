"""Parameter-level protocol checks (garrison/cnaf/detect/arguments.py, multipart): attacker variants
written here, benign variants of the same shapes, and the site policy for method overrides/UTF-8."""

from __future__ import annotations

import pytest

from garrison.cnaf.detect import multipart
from garrison.cnaf.engine import detection_key, inspect
from garrison.cnaf.request import HttpRequest
from garrison.policy.cnaf import CnafControls

OWN = CnafControls(crs={"enabled": False})
FORM = ("Content-Type", "application/x-www-form-urlencoded")


def req(
    target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"", method: str = ""
) -> HttpRequest:
    return HttpRequest(
        method or ("POST" if body else "GET"),
        target,
        headers=[("Host", "app.example.com"), ("Accept", "*/*"), *(headers or [])],
        body=body,
        peer_ip="192.0.2.1",
    )


def protocol(r: HttpRequest, controls: CnafControls = OWN) -> str | None:
    return next((f.reason for f in inspect(r, controls) if f.attack == "protocol"), None)


@pytest.mark.parametrize(
    "r",
    [
        req("/a?p=%c0%af"),  # overlong '/'
        req("/a?p=%e0%80%ae%e0%80%ae/"),  # overlong '.'
        req("/a?p=%E2%A3"),  # cut sequence
        req("/a?p%ff=1"),  # in a name
        req("/a", [FORM], b"q=%c1%9c"),
        req("/a?x=1&na%0d%0ame=1"),  # header injection through a query name
        req("/a?x%0a=1"),
        req("/a?x%01y=1"),  # control character in a name
        req("/a", [FORM], b"a=1&b%1b=2"),
        req("/a", [FORM], b"file=shell.php%00.jpg"),  # NUL in a body value
        req("/a", [("Cookie", "sid=1; a%07b=c")]),
        req("/a?foo[1]a=bar"),  # PHP array name split differently by PHP and the firewall
        req("/a?foo[1]a[2]=bar"),
        req("/a", [FORM], b"user]x=1"),
        req("/a?__proto__%5Btest%5D%3D1=x"),  # encoded brackets
        req("/a?%5Fmethod=TRACE", method="POST"),  # encoded name
    ],
)
def test_argument_violations(r: HttpRequest) -> None:
    assert protocol(r) is not None


@pytest.mark.parametrize(
    "r",
    [
        req("/a?q=%C3%A9t%C3%A9&city=K%C3%B6ln"),  # UTF-8
        req("/a?q=%E2%82%AC10&emoji=%F0%9F%98%80"),
        req("/a?tags[]=a&tags[]=b&user[name]=x&user[address][city]=y"),  # arrays
        req("/a?q=a%20b%09c"),  # tab in a value
        req("/a", [FORM], b"comment=line%0D%0Anext%0A"),  # line breaks in a value (textarea)
        req("/a", [("Content-Type", "application/x-www-form-urlencoded; charset=iso-8859-1")], b"n=Z%FCrich"),
        req("/a", [("Cookie", "theme=dark; lang=de")]),
        req("/a?p=50%25"),
    ],
)
def test_benign_arguments_pass(r: HttpRequest) -> None:
    assert protocol(r) is None


def test_legacy_charset_sites_switch_utf8_off() -> None:
    latin1 = req("/a?city=Z%FCrich")
    assert protocol(latin1) is not None
    assert protocol(latin1, CnafControls(crs={"enabled": False}, protocol={"utf8_arguments": False})) is None


@pytest.mark.parametrize(
    "r",
    [
        req("/api/r?_method=DELETE", method="POST"),  # in the query string
        req("/api/r?id=1&_method=put&x=2", method="POST"),
        req("/transfer?amount=1000&_method=POST"),  # on GET: a same-site (SameSite=Lax) bypass
        req("/a", [FORM], b"_method=TRACE"),
        req("/a", [FORM], b"_method=PROPFIND&x=1"),
        req("/a", [FORM], b"_method=ConNecT"),
        req("/a", [("X-HTTP-Method-Override", "DELETE")]),  # header on GET
        req("/a", [("X-HTTP-Method", "TRACE")], method="POST"),
        req("/a", [("X-Method-Override", "MKCOL")], method="POST"),
        req("/a?_method=%44%45%4C%45%54%45", method="POST"),  # percent-encoded
    ],
)
def test_method_override_variants(r: HttpRequest) -> None:
    assert protocol(r) is not None


@pytest.mark.parametrize(
    "r",
    [
        req("/posts/1", [FORM], b"_method=patch&authenticity_token=x"),  # Rails form
        req("/posts/1", [FORM], b"_token=x&_method=DELETE"),  # Laravel form
        req("/a", [("X-HTTP-Method-Override", "PATCH")], method="POST"),  # API client behind a proxy
        req("/users/sign_out", [FORM], b"_method=post"),  # same method: nothing overridden
        req("/a?_method=ab", method="POST"),  # not a method name
        req("/a?_method=DELETE1", method="POST"),
        req("/a?method=DELETE&http_method=PUT", method="POST"),  # other names are the app's business
    ],
)
def test_benign_method_overrides_pass(r: HttpRequest) -> None:
    assert protocol(r) is None


def test_method_override_policy() -> None:
    rails = req("/posts/1", [FORM], b"_method=delete")
    trace = req("/a?_method=TRACE", method="POST")
    deny = CnafControls(crs={"enabled": False}, protocol={"method_override": "deny"})
    allow = CnafControls(crs={"enabled": False}, protocol={"method_override": "allow"})
    assert protocol(rails, deny) is not None
    assert protocol(trace, allow) is None


def test_method_override_query_is_not_shared_with_plain_queries() -> None:
    """Body-less requests differing only in a plain query share one verdict; `_method` is read."""
    key_plain, shared_plain = detection_key(req("/a?page=2"), False)
    key_override, shared_override = detection_key(req("/a?_method=PUT"), False)
    assert shared_plain and not shared_override
    assert key_plain != key_override


def test_empty_host_header() -> None:
    assert protocol(HttpRequest("GET", "/", "1.0", [("Host", "")], b"", "192.0.2.1")) == "empty Host header"


def _multipart(disposition: str, part_type: str = "text/plain") -> bytes:
    return (
        f"--B\r\nContent-Disposition: form-data; {disposition}\r\nContent-Type: {part_type}\r\n\r\nx\r\n--B--\r\n"
    ).encode()


@pytest.mark.parametrize(
    "body",
    [
        _multipart('name="f"; filename="shell.j\\s\\p"'),  # backslashes a back end unescapes
        _multipart('name="cv.p\\h\\p"; filename="cv.pdf"'),
        _multipart('name="f"; filename="a.ph\\p"'),
        _multipart('name="a"', "text/plain; charset=euc-jp"),  # part charset games
        _multipart('name="a"', "text/plain; charset=utf-7"),
        _multipart('name="a"', "text/plain; charset=ibm037"),
    ],
)
def test_multipart_backslash_and_charset_variants(body: bytes) -> None:
    assert multipart.check("multipart/form-data; boundary=B", body) is not None


@pytest.mark.parametrize(
    "body",
    [
        _multipart('name="f"; filename="C:\\Users\\me\\cv.pdf"'),  # old IE sends the whole path
        _multipart('name="a"', "text/plain; charset=UTF-8"),
        _multipart('name="a"', "text/plain; charset=iso-8859-15"),
        _multipart('name="f"; filename="report.final.pdf"', "application/pdf"),
    ],
)
def test_multipart_benign_names_and_charsets_pass(body: bytes) -> None:
    assert multipart.check("multipart/form-data; boundary=B", body) is None
