"""Protocol violations inside parameters (CRS 920/921's ground): what a form or query string from a
browser or API client never holds, but parser-differential and filter-evasion attacks need.

* control characters (other than tab/CR/LF in values) and line breaks in parameter names;
* percent-encoded bytes that are not valid UTF-8 — overlong forms (`%c0%af` for '/') and cut
  sequences are how filters that decode once are walked past (policy: `protocol.utf8_arguments`);
* malformed PHP array names (`foo[1]a=`), which PHP and the firewall split differently;
* HTTP method overrides (`_method=DELETE`, `X-HTTP-Method-Override`): they turn a request the
  browser's same-site rules allowed into another method (policy: `protocol.method_override`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import unquote_to_bytes

from garrison.cnaf.request import HttpRequest
from garrison.policy.cnaf import ProtocolSettings

# in a name: no control character (a line break in a query name is header injection: CRS 921150;
# a urlencoded body may end in one); in a value: NUL, which ends a C string the filter read whole
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_OR_BREAK = re.compile(rb"[\x00-\x1f\x7f]")
# `a[b]c`, `a[1]b[2]`: something after a closing bracket that opens no further bracket
_MALFORMED_ARRAY = re.compile(rb"\][^\[]")
# CRS v4's shape of an override value: 3-10 letters (a method name, not a word or an id)
_METHOD_TOKEN = re.compile(r"[A-Za-z]{3,10}\Z")
_FORM_OVERRIDES = frozenset({"PUT", "PATCH", "DELETE"})
OVERRIDE_HEADERS = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
_OVERRIDE_PARAM = b"_method"
_MAX_PAIRS = 1000
_LEGACY_CHARSET = re.compile(r"charset\s*=\s*\"?(?!utf-?8\b|us-ascii\b)[\w\-]+", re.I)


def may_override_method(query: str) -> bool:
    """Whether a raw query string may hold a `_method` parameter (cheap; for cache keys)."""
    return "_" in query and "_method" in query.lower()


# A percent-encoded control character (%00-%1F, %7F), byte outside ASCII (%80-%FF), ']' or '_': without
# one (and without raw non-ASCII text, ']' or `_method`) no parameter can break a check here.
_SUSPECT_ESCAPE = re.compile(r"%(?:[0189a-fA-F]|7[fF]|5[dDfF])")


def needs_pairs(raw: str) -> bool:
    """Whether any parameter of a raw query or form body may break a check here (cheap)."""
    return (
        _SUSPECT_ESCAPE.search(raw) is not None or "]" in raw or not raw.isascii() or may_override_method(raw)
    )


def _pairs(raw: str) -> Iterator[tuple[bytes, bytes]]:
    for n, item in enumerate(raw.split("&")):
        if n >= _MAX_PAIRS:
            return
        if not item:
            continue
        name, _, value = item.partition("=")
        yield (
            unquote_to_bytes(name.replace("+", " "))
            if "%" in name or "+" in name
            else name.encode("latin-1", "replace"),
            unquote_to_bytes(value.replace("+", " "))
            if "%" in value or "+" in value
            else value.encode("latin-1", "replace"),
        )


def method_override(req: HttpRequest, value: str, where: str, mode: str) -> str | None:
    """The violation when `value` (from `where`: query, body or header) overrides the method."""
    if mode == "allow":
        return None
    target = value.strip()
    if not _METHOD_TOKEN.match(target) or target.upper() == req.method.upper():
        return None
    if mode == "forms" and req.method == "POST" and target.upper() in _FORM_OVERRIDES and where != "query":
        return None
    return f"HTTP method override {req.method} -> {target.upper()} ({where})"


def _pair_problem(name: bytes, value: bytes, utf8: bool, where: str) -> str | None:
    shown = name[:40].decode("latin-1")
    if (_CONTROL_OR_BREAK if where == "query" else _CONTROL).search(name):
        return f"control character or line break in parameter name {shown!r}"
    if b"\x00" in value:
        return f"NUL byte in parameter {shown!r}"
    if _MALFORMED_ARRAY.search(name):
        return f"malformed array parameter name {shown!r}"
    if utf8 and (not name.isascii() or not value.isascii()):
        try:
            name.decode("utf-8")
            value.decode("utf-8")
        except UnicodeDecodeError:
            return f"invalid UTF-8 in parameter {shown!r}"
    return None


def check(req: HttpRequest, settings: ProtocolSettings) -> str | None:
    """First parameter-level violation of the request, or None."""
    mode = settings.method_override
    ctype = cookie = ""
    for k, v in req.headers:  # one pass: this runs on every request
        lk = k.lower()
        if lk == "content-type":
            ctype = v.lower()
        elif lk == "cookie":
            cookie = v
        elif (
            lk in OVERRIDE_HEADERS
            and mode != "allow"
            and (problem := method_override(req, v, "header", mode))
        ):
            return problem
    sources: list[tuple[str, str, bool]] = []
    if req.query and needs_pairs(req.query):
        sources.append(("query", req.query, settings.utf8_arguments))
    if req.body and ctype.startswith("application/x-www-form-urlencoded"):
        body = req.body[: 1 << 20].decode("latin-1")
        if needs_pairs(body):
            legacy = _LEGACY_CHARSET.search(ctype) is not None
            sources.append(("body", body, settings.utf8_arguments and not legacy))
    for where, raw, utf8 in sources:
        for name, value in _pairs(raw):
            if problem := _pair_problem(name, value, utf8, where):
                return problem
            if (
                mode != "allow"
                and name == _OVERRIDE_PARAM
                and (problem := method_override(req, value.decode("latin-1"), where, mode))
            ):
                return problem
    if "%" in cookie:
        for item in cookie.split(";"):
            name = unquote_to_bytes(item.partition("=")[0].strip())
            if _CONTROL_OR_BREAK.search(name):
                return f"control character in cookie name {name[:40].decode('latin-1')!r}"
    return None
