"""HTTP protocol violations: request smuggling shapes and oversized or malformed heads.

The proxy's parser (llhttp, strict mode) already refuses what it cannot frame unambiguously;
these checks cover what a strict parser still accepts but a back end may read differently.
"""

from __future__ import annotations

from garrison.cnaf.detect import arguments, multipart
from garrison.cnaf.request import HttpRequest
from garrison.policy.cnaf import ProtocolSettings

MAX_HEADERS = 100
# Headers no browser or API client sends; back ends act on them (WebDAV `If`/`Lock-Token`,
# `Content-Range` on a request, `Proxy` → HTTP_PROXY in CGI: httpoxy).
# `Request-Range` is Netscape's pre-standard Range: no client of this century sends it.
_RESTRICTED_HEADERS = frozenset({"proxy", "lock-token", "content-range", "if", "request-range"})
_BODYLESS_METHODS = frozenset({"GET", "HEAD"})
MAX_RANGES = 5
_ALLOWED_VERSIONS = frozenset({"1.0", "1.1"})


def classify_parser_error(message: str) -> str:
    """Name the violation behind an llhttp error message, for the audit."""
    m = message.lower()
    if "transfer-encoding can't be present with content-length" in m:
        return "request smuggling: both Content-Length and Transfer-Encoding"
    if "duplicate content-length" in m:
        return "request smuggling: duplicate Content-Length"
    if "transfer-encoding" in m:
        return "request smuggling: invalid Transfer-Encoding"
    if "chunk" in m:
        return "invalid chunked encoding"
    if "content-length" in m:
        return "invalid Content-Length"
    if "header" in m:
        return "malformed header"
    return f"malformed request ({message})"


_DEFAULT_SETTINGS = ProtocolSettings()


def check(
    req: HttpRequest, max_header_bytes: int, settings: ProtocolSettings = _DEFAULT_SETTINGS
) -> str | None:
    """First protocol violation in a parsed request (head, then body framing and parameters), or None."""
    if req.version not in _ALLOWED_VERSIONS:
        return f"unsupported HTTP version {req.version}"
    if len(req.headers) > MAX_HEADERS:
        return f"too many headers ({len(req.headers)} > {MAX_HEADERS})"
    size = len(req.target) + sum(len(k) + len(v) + 4 for k, v in req.headers)
    if size > max_header_bytes:
        return f"oversized request head ({size} > {max_header_bytes} bytes)"
    cl = te = host = 0
    header_params = False  # a Cookie or method-override header for the parameter checks
    te_value = ""
    for k, v in req.headers:
        lk = k.lower()
        if lk == "content-length":
            cl += 1
        elif lk == "transfer-encoding":
            te += 1
            te_value = v
        elif lk == "host":
            host += 1
            if not v.strip():
                return "empty Host header"
        elif lk == "cookie" or lk in arguments.OVERRIDE_HEADERS:
            header_params = True
    if cl and te:
        return "request smuggling: both Content-Length and Transfer-Encoding"
    if cl > 1:
        return "request smuggling: duplicate Content-Length"
    if te > 1 or (te and te_value.strip().lower() != "chunked"):
        return "request smuggling: unusual Transfer-Encoding"
    if req.version == "1.1" and not host:
        return "HTTP/1.1 request without Host"
    if host > 1:
        return "duplicate Host header"
    for k, v in req.headers:
        if "\x00" in v or "\r" in v or "\n" in v:
            return f"control character in header {k}"
    if problem := _semantics(req, bool(te)):
        return problem
    target = req.target
    if header_params or req.body or ("?" in target and arguments.needs_pairs(target.partition("?")[2])):
        return arguments.check(req, settings)
    return None


def _semantics(req: HttpRequest, chunked: bool) -> str | None:
    """What parses but no real client sends: a body on GET/HEAD, NUL bytes in the target, restricted headers, an empty Accept, malformed or evasive
    Content-Type / charsets, range abuse, multipart tricks."""
    if req.method in _BODYLESS_METHODS and (req.body or chunked):
        return f"{req.method} request with a body"
    if "%00" in req.target:
        return "NUL byte in the request target"
    ctype = ""
    for k, v in req.headers:
        lk = k.lower()
        if lk in _RESTRICTED_HEADERS:
            return f"restricted header {k}"
        if lk == "content-type":
            ctype = v
        elif lk == "range" and (v.count(",") >= MAX_RANGES or "bytes=0-," in v.replace(" ", "")):
            return f"{k} header abuse ({v[:40]!r})"
        elif lk == "accept" and not v.strip():
            return "empty Accept header"
        elif lk in ("accept", "accept-charset") and (problem := multipart.charset_problem(v)):
            return f"{k}: {problem}"
    if ctype:
        if problem := multipart.content_type_problem(ctype):
            return problem
        if ctype.lower().lstrip().startswith("multipart/form-data"):
            return multipart.check(ctype, req.body)
    return None
