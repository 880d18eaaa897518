"""multipart/form-data and Content-Type abuse: what a strict parser accepts but back ends read
differently (CRS 920/922's ground: part charsets, illegal part headers, quoting tricks in names).
"""

from __future__ import annotations

import re

# Charsets a browser or API client sends; UTF-7, UTF-16 and EBCDIC code pages are how filters are evaded.
_CHARSET_OK = re.compile(
    r"(?:utf-?8|us-ascii|ascii|iso-8859-\d{1,2}|windows-125\d|shift_jis|euc-(?:jp|kr)|"
    r"gb2312|gbk|gb18030|big5|koi8-[ru])\Z",
    re.I,
)
_TOKEN = r"[\w!#$&^.+\-]+"
_MEDIA_TYPE = re.compile(
    rf"(?:application|audio|font|image|message|model|multipart|text|video|x-[\w.+\-]+)/{_TOKEN}"
    rf"(?:\s*;\s*{_TOKEN}\s*=\s*(?:{_TOKEN}|\"[^\"\\\r\n]*\"))*\s*;?\s*\Z",
    re.I,
)
_PARAM = re.compile(r";\s*([\w!#$&^.+\-]+)\s*=\s*(\"[^\"]*\"|[^;\s]*)")
# Inside a part, a charset other than these is an evasion (browsers send none; `_charset_` names
# the form's): a filter decodes the part as UTF-8 while the back end decodes EUC-JP, UTF-7…
_PART_CHARSET_OK = re.compile(r"(?:utf-?8|us-ascii|iso-8859-15?|windows-1252)\Z", re.I)
_PART_HEADERS = frozenset({"content-disposition", "content-type"})
# In a raw part name or file name: a quote, '=' or a ';' that ends no HTML entity (`&auml;` is fine);
# an apostrophe only outside double quotes (`filename="O'Brien CV.pdf"` is a name).
_BYPASS_CHARS = re.compile(r"[\"=;]")
_BYPASS_CHARS_UNQUOTED = re.compile(r"['\"=;]")  # unquoted, an apostrophe may open a quote
_ENTITY = re.compile(r"&(?:[A-Za-z]{1,8}|#\d{1,7}|#x[0-9A-Fa-f]{1,6});")
_DISPOSITION_PARAM = re.compile(r";\s*(name|filename\*?)\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^;\r\n]*)", re.I)


def content_type_problem(value: str) -> str | None:
    """A Content-Type that is malformed, names a dangerous charset, declares one twice or puts
    a boundary on a type that has none (`x-www-form-urlencoded; boundary="charset=utf-7"`)."""
    if not _MEDIA_TYPE.match(value.strip()):
        return "malformed Content-Type"
    params = [(k.lower(), v.strip('"')) for k, v in _PARAM.findall(value)]
    charsets = [v for k, v in params if k == "charset"]
    boundaries = sum(k == "boundary" for k, _ in params)
    if len(charsets) > 1 or boundaries > 1:
        return "Content-Type declares a parameter twice"
    if boundaries and not value.lstrip().lower().startswith("multipart/"):
        return "boundary on a Content-Type that is not multipart"
    if charsets and not _CHARSET_OK.match(charsets[0]):
        return f"Content-Type charset {charsets[0][:40]!r} not allowed"
    return None


_CHARSET_PARAM = re.compile(r"charset\s*=\s*\"?([^\s\";,]+)", re.I)


def charset_problem(value: str) -> str | None:
    """A charset named in Accept / Accept-Charset that no browser asks for (UTF-7, EBCDIC)."""
    if "charset=" in value.lower():
        names = _CHARSET_PARAM.findall(value)
    else:
        names = [p.split(";", 1)[0].strip() for p in value.split(",")] if "-" in value else []
    for name in names:
        if name and name != "*" and not _CHARSET_OK.match(name):
            return f"charset {name[:40]!r} not allowed"
    return None


def parts(body: bytes, boundary: bytes, limit: int = 256) -> list[tuple[list[tuple[str, str]], bytes]]:
    """(headers, data) of each part: a plain split on the delimiter lines, CRLF or bare LF."""
    out: list[tuple[list[tuple[str, str]], bytes]] = []
    for chunk in body.split(b"--" + boundary)[1:limit]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk[1:] if chunk.startswith(b"\n") else chunk
        head, sep, data = chunk.replace(b"\r\n", b"\n").partition(b"\n\n")
        headers = []
        for line in head.decode("latin-1").split("\n") if sep else []:
            name, colon, value = line.partition(":")
            if colon:
                headers.append((name.strip().lower(), value.strip()))
        out.append((headers, data))
    return out


def check(content_type: str, body: bytes) -> str | None:
    """First multipart violation of a multipart/form-data body, or None."""
    bounds = [v.strip('"') for k, v in _PARAM.findall(content_type) if k.lower() == "boundary"]
    if not bounds or not bounds[0]:
        return "multipart body without a boundary"
    boundary = bounds[0].encode("latin-1", "replace")
    if body and b"--" + boundary not in body[: 1024 + len(boundary)]:
        return "multipart body does not start with its declared boundary"
    for headers, data in parts(body, boundary):
        for name, value in headers:
            if name not in _PART_HEADERS:
                return f"illegal multipart part header {name[:40]!r}"
            if name == "content-type":
                if problem := content_type_problem(value):
                    return f"multipart part: {problem}"
                charset = next((v.strip('"') for k, v in _PARAM.findall(value) if k.lower() == "charset"), "")
                if charset and not _PART_CHARSET_OK.match(charset):
                    return f"multipart part charset {charset[:40]!r} not allowed"
            if name == "content-disposition":
                for _key, raw in _DISPOSITION_PARAM.findall(value):
                    quoted = raw.startswith('"') and raw.endswith('"') and len(raw) > 1
                    inner = raw[1:-1] if quoted else raw
                    chars = _BYPASS_CHARS if quoted else _BYPASS_CHARS_UNQUOTED
                    if chars.search(_ENTITY.sub("", inner) if "&" in inner else inner):
                        return "multipart name or file name with quote/';'/'=' (parser bypass)"
                    if "\\" in inner.rpartition(".")[2] and "." in inner:
                        # `1.j\s\p`: a back end that unescapes reads `.jsp`; a Windows path
                        # (`C:\Users\cv.pdf`) has its backslashes before the extension
                        return "multipart name or file name with a backslash in its extension"
        disposition = next((v for k, v in headers if k == "content-disposition"), "")
        if 'name="_charset_"' in disposition.lower():
            charset = data.strip().decode("latin-1", "replace")
            if not _CHARSET_OK.match(charset):
                return f"multipart _charset_ {charset[:40]!r} not allowed"
    return None
