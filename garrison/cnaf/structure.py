"""What a value *is*, before CRS's noisier rules read it as an attack (the benign-side check).

CRS rules match characters, not meaning: a JSON document, an XML document's markup, a browser's
User-Agent or a code snippet posted to a field made for code are full of the quotes, brackets and
keywords its paranoia-level 2-4 rules count. These checks recognise such values by their
structure; the engine then counts fewer CRS rules on them. The CNAF's own detectors (which look
for a context being *broken out of*) still run on every value at full strength.
"""

from __future__ import annotations

import json
import re

# A whole JSON container (`[{"id":1,"qty":2}]`, `{"array":[1,2,3]}`): data, not a payload.
_JSON_START = re.compile(r"\s*[\[{]")


def is_json_document(value: str) -> bool:
    if not _JSON_START.match(value) or len(value) > 65536:
        return False
    try:
        doc = json.loads(value)
    except ValueError:
        return False
    return isinstance(doc, dict | list)


_XML_SKIP = re.compile(r"<\?.*?\?>|<!--.*?-->|<!\[CDATA\[.*?\]\]>", re.S)
_XML_TAG = re.compile(r"<(/?)([A-Za-z_][\w.:-]*)((?:\s+[^\s=/>]+\s*=\s*(?:\"[^\"<]*\"|'[^'<]*'))*)\s*(/?)>")


def is_xml_document(text: str) -> bool:
    """A well-formed XML document (tags nest and close, no stray `<`, no DOCTYPE: DTDs are where
    XXE lives). Checked with a tag scanner, not a parser: nothing is expanded or fetched."""
    body = _XML_SKIP.sub("", text[:262144]).strip()
    if not body.startswith("<") or "<!" in body:
        return False
    stack: list[str] = []
    pos = 0
    for m in _XML_TAG.finditer(body):
        if "<" in body[pos : m.start()]:
            return False  # a '<' that opens no tag
        pos = m.end()
        closing, name, _attrs, empty = m.groups()
        if closing:
            if not stack or stack.pop() != name:
                return False
        elif not empty:
            stack.append(name)
        if not stack and body[pos:].strip():
            return False  # content after the root element
    return not stack and pos > 0 and "<" not in body[pos:]


# Parameter names that say the field holds code or a code-like text (a docs or code-sharing app).
# Not `code` or `source`: OAuth codes, promo codes and campaign sources are everyday parameters.
_CODE_FIELD = re.compile(
    r"(?:^|[_.\-\[])(?:snippet|sql|python|py|shell|bash|css|template|markdown|md|regex|"
    r"example|sample|diff|patch|gist|program|javascript|js|ruby|go|java|yaml|dockerfile)s?(?:[_.\-\]\[]|$)",
    re.I,
)
_PAIRS = {")": "(", "]": "[", "}": "{"}


def is_code_snippet(name: str, value: str, *, structured: bool) -> bool:
    """A value of a code field (`snippet`, `sql`, `python`…) of a JSON document, or of several
    lines, that is self-contained: its quotes and brackets balance. An injection breaks out of a
    context, which leaves them unbalanced (`x'); DROP TABLE t;--`, `"><script>`); a one-line query
    or form parameter is where injections are tried, so it does not qualify (`structured` says the
    value came from a JSON body)."""
    if not name or not (structured or "\n" in value) or not _CODE_FIELD.search(name.rsplit(".", 1)[-1]):
        return False
    stack: list[str] = []
    quote = ""
    escaped = False
    for ch in value:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
            continue
        if ch in "'\"`":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in _PAIRS and (not stack or stack.pop() != _PAIRS[ch]):
            return False
    return not quote and not stack


# A browser's User-Agent: `Mozilla/5.0 (platform) Engine/x (KHTML, like Gecko) Browser/x …`.
_BROWSER_UA = re.compile(
    r"Mozilla/5\.0 \([\w .;:,/+\-]{3,160}\)(?: [\w.]+/[\w.+\-]+(?: \([\w ,.;:+\-]{1,60}\))?){1,8}\Z"
)
# Accept-Language: language tags with optional weights (`ps-AF,en;q=0.8`).
_ACCEPT_LANGUAGE = re.compile(
    r"(?:\*|[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*)(?:\s*;\s*q=[01](?:\.\d{0,3})?)?"
    r"(?:\s*,\s*(?:\*|[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*)(?:\s*;\s*q=[01](?:\.\d{0,3})?)?)*\Z"
)


def header_level(name: str, value: str) -> int | None:
    """The highest CRS paranoia level worth counting on a well-formed browser header (0: none),
    or None for any other header."""
    if name == "accept-language":
        return 0 if _ACCEPT_LANGUAGE.match(value) else None
    if name == "user-agent" and value.startswith("Mozilla/5.0 (") and _BROWSER_UA.match(value):
        return 1
    return None
