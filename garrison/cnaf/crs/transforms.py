"""ModSecurity transformation functions (`t:`) that CRS request rules use.

Values reach the CRS matcher already decoded to a fixed point by `garrison.cnaf.decode` (URL,
%u, HTML entities, JS escapes, overlong UTF-8, NFKC), so the decoding transformations are no-ops
here and are dropped from a rule's pipeline; `lowercase` becomes a case-insensitive match.
What remains reshapes the text: command-line folding, whitespace, comments, paths.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

# Already done by garrison.cnaf.decode.decode (fixed point), or expressed as a match flag.
SUBSUMED = frozenset(
    {
        "urlDecode",
        "urlDecodeUni",
        "htmlEntityDecode",
        "jsDecode",
        "utf8toUnicode",
        "lowercase",
        "trim",
        "trimLeft",
        "trimRight",
    }
)

_WS = re.compile(r"\s+")
_CMD_DROP = str.maketrans("", "", "\\\"'^")
_CMD_SPACE = re.compile(r"[\s,;]+")
_CMD_BEFORE = re.compile(r" +(?=[/(])")
_COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)", re.S)
_REMOVE_COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)|--[^\n]*|#[^\n]*", re.S)
_CSS_ESC = re.compile(r"\\([0-9a-fA-F]{1,6})\s?|\\(.)", re.S)
_DOT_SEGMENTS = re.compile(r"/(?:\./)+")
_MULTI_SLASH = re.compile(r"/{2,}")
_SQL_HEX = re.compile(r"0x((?:[0-9a-fA-F]{2})+)")


def cmd_line(value: str) -> str:
    """ModSecurity `cmdLine`: drop \\ \" ' ^, spaces before / and (, fold , ; and whitespace, lower-case."""
    value = value.translate(_CMD_DROP)
    value = _CMD_SPACE.sub(" ", value)
    value = _CMD_BEFORE.sub("", value)
    return value.lower()


def _normalise_path(value: str) -> str:
    if "/" not in value:
        return value
    value = _MULTI_SLASH.sub("/", value)
    value = _DOT_SEGMENTS.sub("/", value)
    parts: list[str] = []
    for seg in value.split("/"):
        if seg == ".." and parts and parts[-1] not in ("", ".."):
            parts.pop()
        else:
            parts.append(seg)
    return "/".join(parts)


def _normalise_path_win(value: str) -> str:
    return _normalise_path(value.replace("\\", "/") if "\\" in value else value)


def _css_decode(value: str) -> str:
    if "\\" not in value:
        return value

    def repl(m: re.Match[str]) -> str:
        if m.group(1):
            code = int(m.group(1), 16)
            return chr(code) if 0 < code < 0x110000 else ""
        return m.group(2)

    return _CSS_ESC.sub(repl, value)


def _base64(value: str) -> str:
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=False).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return value


def _sql_hex(value: str) -> str:
    def repl(m: re.Match[str]) -> str:
        return bytes.fromhex(m.group(1)).decode("latin-1")

    return _SQL_HEX.sub(repl, value) if "0x" in value.lower() else value


def _escape_seq(value: str) -> str:
    if "\\" not in value:
        return value
    try:
        return value.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except (UnicodeDecodeError, ValueError):
        return value


TRANSFORMS: dict[str, Callable[[str], str]] = {
    "removeNulls": lambda v: v.replace("\x00", "") if "\x00" in v else v,
    "replaceNulls": lambda v: v.replace("\x00", " ") if "\x00" in v else v,
    "cmdLine": cmd_line,
    "compressWhitespace": lambda v: _WS.sub(" ", v),
    "removeWhitespace": lambda v: _WS.sub("", v),
    "replaceComments": lambda v: _COMMENT.sub(" ", v) if "/*" in v else v,
    "removeCommentsChar": lambda v: v.replace("/*", "").replace("*/", "").replace("--", "").replace("#", ""),
    "removeComments": lambda v: _REMOVE_COMMENT.sub("", v),
    "normalisePath": _normalise_path,
    "normalizePath": _normalise_path,
    "normalisePathWin": _normalise_path_win,
    "normalizePathWin": _normalise_path_win,
    "cssDecode": _css_decode,
    "base64Decode": _base64,
    "base64decode": _base64,
    "sqlHexDecode": _sql_hex,
    "escapeSeqDecode": _escape_seq,
}


def pipeline_of(transforms: list[str]) -> tuple[str, ...] | None:
    """The transformations left to apply, or None if one of them is not supported."""
    out: list[str] = []
    for name in transforms:
        if name in SUBSUMED:
            continue
        if name not in TRANSFORMS:
            return None
        if not out or out[-1] != name:
            out.append(name)
    return tuple(out)


def apply(pipeline: tuple[str, ...], value: str) -> str:
    for name in pipeline:
        value = TRANSFORMS[name](value)
    return value
