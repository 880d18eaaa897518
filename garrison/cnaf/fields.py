"""Split a request into the named, decoded values the detectors match.

Each value carries where it came from (`location`) and its parameter name so exceptions can
exempt one parameter and audits can say exactly which field carried the attack.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote

from python_multipart.multipart import MultipartParser, parse_options_header

from garrison.cnaf.decode import decode, decode_path, fold_overlong
from garrison.cnaf.request import HttpRequest

# Headers whose values are structural (negotiation, framing, credentials) and never reach app logic
# as free text; matching them only produces false positives.
_STRUCTURAL_HEADERS = frozenset(
    {
        "host",
        "accept",
        "accept-encoding",
        "accept-language",
        "accept-charset",
        "connection",
        "content-length",
        "content-type",
        "transfer-encoding",
        "cache-control",
        "pragma",
        "upgrade",
        "authorization",
        "proxy-authorization",
        "cookie",
        "if-none-match",
        "if-match",
        "if-modified-since",
        "if-unmodified-since",
        "range",
        "te",
        "expect",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-fetch-site",
        "sec-fetch-mode",
        "sec-fetch-dest",
        "sec-fetch-user",
        "sec-ch-ua",
        "sec-ch-ua-mobile",
        "sec-ch-ua-platform",
        "upgrade-insecure-requests",
        "dnt",
        "origin",
        "priority",
        "x-request-id",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "b3",
        "traceparent",
        "tracestate",
        "x-vcap-request-id",
        "x-cf-applicationid",
        "x-cf-instanceid",
        "x-cf-instanceindex",
        "x-forwarded-proto",
        "x-forwarded-port",
    }
)
_MAX_FIELDS = 2000
_MAX_JSON_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Field:
    # path | query | query_name | cookie | cookie_name | header | body | body_name | filename | part_name
    # | xml | raw_header
    location: str
    name: str
    value: str

    @property
    def label(self) -> str:
        return f"{self.location}:{self.name}" if self.name else self.location


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _unquote_plus(s: str) -> str:
    if "+" in s:
        s = s.replace("+", " ")
    return unquote(s, errors="replace") if "%" in s else s


def _qs_fields(qs: str, location: str) -> Iterator[Field]:
    """Like parse_qsl (keep blanks) but cheaper on the common plain `a=1&b=2`, which dominates traffic."""
    qs = fold_overlong(qs)
    for n, piece in enumerate(qs.split("&")):
        if n >= _MAX_FIELDS:
            break
        if not piece:
            continue
        name, _, value = piece.partition("=")
        dname = decode(_unquote_plus(name))
        if dname and not dname.isalnum():
            yield Field(f"{location}_name", dname, dname)
        if value:
            yield Field(location, dname, decode(_unquote_plus(value)))


def _json_fields(node: object, path: str, depth: int = 0) -> Iterator[Field]:
    if depth > _MAX_JSON_DEPTH:
        return
    if isinstance(node, str):
        yield Field("body", path or "$", decode(node))
    elif isinstance(node, dict):
        for k, v in node.items():
            key = str(k)
            if not key.isalnum():
                yield Field("body_name", key, decode(key))
            yield from _json_fields(v, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _json_fields(v, f"{path}[{i}]", depth + 1)


def _multipart_fields(body: bytes, boundary: bytes) -> Iterator[Field]:
    """Non-file parts are inspected as text; file parts only by file name (binary uploads are not text)."""
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    cur_headers: dict[bytes, bytes] = {}
    hname = bytearray()
    hvalue = bytearray()

    def on_part_begin() -> None:
        cur_headers.clear()
        parts.append(({}, bytearray()))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(data[start:end])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        hname.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        hvalue.extend(data[start:end])

    def on_header_end() -> None:
        parts[-1][0][bytes(hname).lower()] = bytes(hvalue)
        hname.clear()
        hvalue.clear()

    if b"\r\n" not in body[: len(boundary) + 4] and b"\n" in body[: len(boundary) + 4]:
        # bare-LF line endings: lenient back ends (PHP, many frameworks) read them, so inspect them too
        body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
        },
        max_header_count=32,
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception:  # truncated or malformed: inspect what parsed so far
        pass
    for headers, data in parts[:_MAX_FIELDS]:
        _, opts = parse_options_header(headers.get(b"content-disposition", b""))
        name = _text(opts.get(b"name", b""))
        filename = opts.get(b"filename")
        if name and not name.isalnum():
            yield Field("part_name", name, decode(name))
        if filename is not None:
            fname = decode(_text(filename))
            yield Field("filename", name, fname)
            ctype = headers.get(b"content-type", b"").lower()
            if ctype.startswith(b"text/") and not ctype.startswith(b"text/plain"):
                yield Field("body", name, decode(_text(bytes(data))))
        else:
            yield Field("body", name, decode(_text(bytes(data))))


def body_inspectable(content_type: str) -> bool:
    """Bodies worth buffering for inspection: forms, JSON, multipart, text, XML (and unlabelled ones)."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    return (
        not ctype
        or ctype in ("application/x-www-form-urlencoded", "application/json", "multipart/form-data")
        or ctype.endswith(("+json", "xml", "+xml"))
        or ctype.startswith("text/")
    )


def _body_fields(req: HttpRequest) -> Iterator[Field]:
    if not req.body:
        return
    ctype, opts = parse_options_header(req.header("content-type") or "")
    ctype_s = ctype.decode("latin-1").lower()
    if ctype_s == "application/x-www-form-urlencoded":
        yield from _qs_fields(_text(req.body), "body")
    elif ctype_s == "application/json" or ctype_s.endswith("+json"):
        try:
            doc = json.loads(req.body)
        except ValueError:
            yield Field("body", "", decode(_text(req.body)))
        else:
            yield from _json_fields(doc, "")
    elif ctype_s == "multipart/form-data" and opts.get(b"boundary"):
        yield from _multipart_fields(req.body, opts[b"boundary"])
    elif ctype_s.endswith(("xml", "+xml")):
        yield from xml_fields(_text(req.body))
    elif ctype_s.startswith("text/") or not ctype_s:
        text = _text(req.body)
        if _XML_START.match(text):
            yield from xml_fields(text)
        else:
            yield Field("body", "", decode(text))


_XML_START = re.compile(r"\s*<(?:\?xml|!DOCTYPE|[A-Za-z_][\w.:-]*[\s/>])", re.I)
_XML_DECL = re.compile(r"<\?xml\b[^>]*?\?>", re.I)
_XML_TAG = re.compile(r"</?[A-Za-z_][\w.:-]*((?:\s+[^\s=/>]+\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))*)\s*/?>")
_XML_ATTR = re.compile(r"=\s*(?:\"([^\"]*)\"|'([^']*)')")
_XML_CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.S)


def xml_fields(text: str) -> Iterator[Field]:
    """An XML document as its text content (`xml`) and attribute values (`xml:@`).

    Markup itself (the `<?xml …?>` declaration, element tags) is structure, not input: matching it
    only produces false positives. DOCTYPE/ENTITY declarations stay in the text (XXE payloads live
    there). A regex pass, not a parser: nothing is expanded, nothing is fetched.
    """
    attrs: list[str] = []

    def tag(m: re.Match[str]) -> str:
        if m.group(1):
            attrs.extend(a or b for a, b in _XML_ATTR.findall(m.group(1)))
        return " "

    body = _XML_CDATA.sub(lambda m: m.group(1), _XML_DECL.sub(" ", text))
    content = " ".join(_XML_TAG.sub(tag, body).split())
    if content:
        yield Field("xml", "", decode(content))
    for n, value in enumerate(attrs[:_MAX_FIELDS]):
        if value and not value.isalnum():
            yield Field("xml", f"@{n}", decode(value))


def _cookie_fields(req: HttpRequest) -> Iterator[Field]:
    for header in req.header_values("cookie"):
        for pair in header.split(";"):
            name, _, value = pair.strip().partition("=")
            if name and not name.replace("_", "").isalnum():
                yield Field("cookie_name", name, decode(name, plus_is_space=False))
            if value:
                yield Field("cookie", name, decode(value.strip('"'), plus_is_space=False))


def extract(req: HttpRequest, *, query: bool = True) -> list[Field]:
    """All inspectable values of a request, decoded (`query=False` skips a query known to be plain)."""
    out: list[Field] = [Field("path", "", decode_path(req.path))]
    if query and req.query:
        out.extend(_qs_fields(req.query, "query"))
    out.extend(_cookie_fields(req))
    for name, value in req.headers:
        lname = name.lower()
        if lname not in _STRUCTURAL_HEADERS:
            out.append(Field("header", name, decode(value)))
        elif lname != "cookie" and ("()" in value or "${" in value):
            # structural headers still reach CGI environments and loggers: Shellshock, Log4Shell
            out.append(Field("raw_header", name, value))
    out.extend(_body_fields(req))
    return out[:_MAX_FIELDS]
