"""Full decoding of request values before matching.

Attackers hide payloads behind layers of encoding that the application undoes (URL, double URL,
%uXXXX, HTML entities, full-width Unicode, overlong UTF-8). Matching the raw bytes misses them, so
every value is decoded to a fixed point first and the detectors only ever see the decoded form.
"""

from __future__ import annotations

import html
import re
import unicodedata
from urllib.parse import unquote

_MAX_ROUNDS = 4
_PCT_U = re.compile(r"%u([0-9a-fA-F]{4})")
# Overlong / invalid UTF-8 forms of '/', '\\' and '.' that old servers accepted.
_OVERLONG = {
    "%c0%af": "/",
    "%e0%80%af": "/",
    "%c1%9c": "\\",
    "%c1%1c": "\\",
    "%c0%ae": ".",
    "%c0%2e": ".",
    "%e0%80%ae": ".",
}
_OVERLONG_RE = re.compile("|".join(re.escape(k) for k in _OVERLONG), re.IGNORECASE)
# Look-alikes that NFKC leaves alone but path handling on some platforms folds.
_LOOKALIKES = str.maketrans({"\u2215": "/", "\u2044": "/", "\u2216": "\\", "\u29f5": "\\", "\uff0e": "."})
_CONTROL = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NEEDS_WORK = re.compile(r"[%&+\\]|[^\x00-\x7f]")


def fold_overlong(value: str) -> str:
    """Replace overlong UTF-8 escapes of '/', '\\' and '.' before a strict decoder mangles them."""
    return _OVERLONG_RE.sub(lambda m: _OVERLONG[m.group(0).lower()], value) if "%" in value else value


def _once(value: str) -> str:
    if "%" in value:
        value = _OVERLONG_RE.sub(lambda m: _OVERLONG[m.group(0).lower()], value)
        value = _PCT_U.sub(lambda m: chr(int(m.group(1), 16)), value)
        value = unquote(value, errors="replace")
    if "&" in value:
        value = html.unescape(value)
    if "\\" in value:
        value = _unescape_backslash(value)
    return value


_BS_ESC = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|u\{([0-9a-fA-F]{1,6})\})")


def _unescape_backslash(value: str) -> str:
    """JavaScript/JSON-style \\xNN and \\uNNNN escapes that browsers and template engines undo."""

    def repl(m: re.Match[str]) -> str:
        code = int(next(g for g in m.groups() if g), 16)
        return chr(code) if code < 0x110000 else m.group(0)

    return _BS_ESC.sub(repl, value)


def decode(value: str, *, plus_is_space: bool = False) -> str:
    """Decode to a fixed point (at most a few rounds), fold full-width forms, keep NUL visible.

    NUL bytes are kept as '\\x00' (detectors look for NUL-truncation tricks) while other control
    characters become spaces so `java\\tscript:` or `un\\x0bion` cannot split a keyword.
    """
    if not _NEEDS_WORK.search(value):
        return value
    if plus_is_space and "+" in value:
        value = value.replace("+", " ")
    for _ in range(_MAX_ROUNDS):
        new = _once(value)
        if new == value:
            break
        value = new
    if not value.isascii():
        value = unicodedata.normalize("NFKC", value).translate(_LOOKALIKES)
    if _CONTROL.search(value):
        value = _CONTROL.sub(" ", value)
    return value


def decode_path(raw_path: str) -> str:
    """Decoded path with backslashes folded to '/', as a Windows or a lenient server would see it."""
    return decode(raw_path).replace("\\", "/")
