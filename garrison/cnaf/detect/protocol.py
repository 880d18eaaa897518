"""HTTP protocol violations: request smuggling shapes and oversized or malformed heads.

The proxy's parser (llhttp, strict mode) already refuses what it cannot frame unambiguously;
these checks cover what a strict parser still accepts but a back end may read differently.
"""

from __future__ import annotations

from garrison.cnaf.request import HttpRequest

MAX_HEADERS = 100
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


def check(req: HttpRequest, max_header_bytes: int) -> str | None:
    """First protocol violation in a parsed request head, or None."""
    if req.version not in _ALLOWED_VERSIONS:
        return f"unsupported HTTP version {req.version}"
    if len(req.headers) > MAX_HEADERS:
        return f"too many headers ({len(req.headers)} > {MAX_HEADERS})"
    size = len(req.target) + sum(len(k) + len(v) + 4 for k, v in req.headers)
    if size > max_header_bytes:
        return f"oversized request head ({size} > {max_header_bytes} bytes)"
    cl = te = host = 0
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
    return None
