"""The ModSecurity variables of one request (ARGS, REQUEST_COOKIES, REQUEST_HEADERS, FILES, XML…).

Built from the CNAF's own decoded fields (so CRS rules see the same fully decoded values as the
CNAF detectors) plus the few whole-request variables CRS reads (URI, request line, raw body).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote

from garrison.cnaf.decode import decode, fold_overlong
from garrison.cnaf.fields import Field, xml_fields
from garrison.cnaf.request import HttpRequest
from garrison.cnaf.structure import is_xml_document

# CNAF field location → ModSecurity collection.
_LOCATION_COLLECTION = {
    "query": "ARGS_GET",
    "body": "ARGS_POST",
    "query_name": "ARGS_GET_NAMES",
    "body_name": "ARGS_POST_NAMES",
    "cookie": "REQUEST_COOKIES",
    "cookie_name": "REQUEST_COOKIES_NAMES",
    "filename": "FILES",
    "part_name": "FILES_NAMES",
    "xml": "XML",
}
_MAX_RAW = 64 * 1024


def _url_decode(value: str) -> str:
    return unquote(fold_overlong(value), errors="replace") if "%" in value else value


@dataclass(frozen=True, slots=True)
class Variable:
    collection: str
    key: str  # lower-cased for headers; the parameter name otherwise
    value: str
    field: Field  # what an audit names as the carrier


def header_variables(name: str, value: str) -> tuple[Variable, Variable]:
    """REQUEST_HEADERS_NAMES and REQUEST_HEADERS of one header line."""
    fld = Field("header", name, value)
    return (
        Variable("REQUEST_HEADERS_NAMES", name.lower(), name, fld),
        Variable("REQUEST_HEADERS", name.lower(), decode(value), fld),
    )


def variables(
    req: HttpRequest,
    fields: list[Field],
    *,
    plain_target: bool = False,
    headers: bool = True,
    only_headers: bool = False,
) -> Iterator[Variable]:
    """`plain_target`: the raw path and query hold no character any rule on REQUEST_URI/QUERY_STRING
    needs (the caller's pre-check), so those two are left out — the common request stays cheap.
    `headers=False` leaves out REQUEST_HEADERS(_NAMES), `only_headers` yields nothing else."""
    if headers:
        for name, value in req.headers:
            yield from header_variables(name, value)
    if only_headers:
        return
    for fld in fields:
        coll = _LOCATION_COLLECTION.get(fld.location)
        if coll is not None:
            yield Variable(coll, fld.name, fld.value, fld)
        elif fld.location == "path":
            yield Variable("REQUEST_FILENAME", "", fld.value, fld)
            base = fld.value.rsplit("/", 1)[-1]
            if base:
                yield Variable("REQUEST_BASENAME", "", base, fld)
    # URL-decoded once, as CRS's own t:urlDecodeUni leaves them (HTML entities are no URI syntax)
    target = _url_decode(req.target[:_MAX_RAW])
    uri = Field("uri", "", target)
    if not plain_target:
        yield Variable("REQUEST_URI", "", target, uri)
    if "(" in target:  # CRS's REQUEST_LINE rule is Shellshock's `() {`; a line without '(' cannot match
        yield Variable("REQUEST_LINE", "", f"{req.method} {target} HTTP/{req.version}", uri)
    if req.query and not plain_target:
        query = _url_decode(req.query[:_MAX_RAW])
        yield Variable("QUERY_STRING", "", query, Field("query", "", req.query))
    if req.body:
        text = req.body[:_MAX_RAW].decode("utf-8", "replace")
        if text.lstrip().startswith("<") and is_xml_document(text):
            # a well-formed XML document: its text and attribute values, not its markup (element names)
            text = " ".join(f.value for f in xml_fields(text))
            yield Variable("REQUEST_BODY", "", text, Field("body", "", text))
            return
        yield Variable("REQUEST_BODY", "", decode(text), Field("body", "", text))
