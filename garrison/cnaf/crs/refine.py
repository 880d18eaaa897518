"""Benign-side checks on single CRS 3.3 rules: the rule's pattern matched, but the text around the
match shows it is not the attack the rule is about.

Each check names a class of everyday input a CRS 3.3 pattern over-reads (a sentence that starts
with a command name, a Swiss-style number, a CSS class that starts with `select`), so the rule keeps
firing on the attacks it exists for. A check only ever removes a hit, never adds one (any exact
pre-filter in front of the matcher stays exact). Measured on the development part of the CRS
regression tests (bench/cnaf_crs.py); each has attacker and benign variants in tests/cnaf.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# 921110 (request smuggling) reads `get it\n`, `trace ifconfig\n`: a smuggled request has a
# request line — method, target and HTTP version.
_REQUEST_LINE = re.compile(
    r"\b(?:get|post|head|options|connect|put|delete|trace|track|patch|propfind|proppatch|mkcol|copy|move|"
    r"lock|unlock)\s+\S+\s+http/\d",
    re.I,
)


def _no_request_line(value: str, prose: bool) -> bool:
    return _REQUEST_LINE.search(value) is None


# 942360 (concatenated SQL) reads a keyword after leading punctuation: `/select-quote`,
# `.select-gws-banana`, `/load.php`, `Update: after…`, `"desc"` are an identifier, a file name, a
# label or a quoted word — the keyword is glued to `-word`/`.word`, closes a label or stands quoted alone. Its `… as x from …` branch reads
# sentences (`… . As evidence from the following …`): SQL names a table after FROM, not an article.
_KEYWORD = r"(?:alter|create|delete|desc|insert|load|rename|select|truncate|update|union)"
_GLUED_KEYWORD = re.compile(
    r"[\W\d]*?\s*(?:" + _KEYWORD + r"(?:[-.][a-z]|:\s+[a-z])|([\"'`])" + _KEYWORD + r"\1\W*\Z)", re.I
)
_PROSE_AS_FROM = re.compile(
    r"[.!?,;:]\s+as\s+\w+\s+from\s+(?:the|a|an|this|that|these|those|my|our|your|his|her|their|its)\s",
    re.I,
)
_SQL_SIGNS = re.compile(
    r"load_file|group_concat|regexp|\bchar\s*\(|\bend\s*\)|\b(?:from|where|into|table)\b|--|/\*|;", re.I
)


def _sql_keyword_in_words(value: str, prose: bool) -> bool:
    if _PROSE_AS_FROM.search(value):
        return True
    return _GLUED_KEYWORD.match(value) is not None and _SQL_SIGNS.search(value) is None


# 921130 (response splitting) reads `HTTP/2` and `<html` in prose ("servers accepting HTTP/2
# requests"): a split response needs a line break before its status line or markup.
def _no_line_break(value: str, prose: bool) -> bool:
    return "\n" not in value and "\r" not in value


# 921151 (a line break in a query value) reads text from a multi-line field sent by script
# ("Go to store.\nAt the store, shop."). An injection needs the next line to speak a protocol: a
# header or parameter (`Name:`, `next=`), a command verb (`MAIL FROM`, `RETR 1`, `a001 EXAMINE`),
# markup or code (a line that does not start with a letter), an empty line — or a CR (CRLF is what mail, IMAP and HTTP lines end with).
_INJECTED_LINE = re.compile(r"\n[ \t]*(?:[\w.\-]+[ \t]*[:=]|\w*[ \t]*[A-Z]{3,}\b|[^A-Za-z \t]|$)")


def _line_break_in_text(value: str, prose: bool) -> bool:
    return "\r" not in value and _INJECTED_LINE.search(value) is None


# 942400 (`and` before a number) reads counted things: "and 7 oranges". An injection compares or
# quotes (`and '5'`, `and 7=7`) or goes on in SQL (`and 1 union …`), or ends the value (`5 and 1`).
_AND_NUMBER_WORD = re.compile(r"\band\s+\d{1,10}\s+([a-z]{2,})", re.I)
_SQL_CONTINUATION = frozenset(
    {
        *("union", "select", "or", "and", "xor", "div", "mod", "order", "group", "limit", "having"),
        *("procedure", "into", "from", "where", "like", "rlike", "regexp", "between", "is", "not"),
        *("null", "sleep", "benchmark", "waitfor"),
    }
)


def _counted_things(value: str, prose: bool) -> bool:
    if any(c in value for c in "=<>'\"`"):
        return False
    words = [m.group(1).lower() for m in _AND_NUMBER_WORD.finditer(value)]
    return bool(words) and _SQL_CONTINUATION.isdisjoint(words) and len(words) == value.lower().count("and ")


# 942490 (quote, digits, punctuation) reads Swiss/Liechtenstein thousands separators: 1'000'000.
_GROUPED_NUMBER = re.compile(r"(?<![\w'])\d{1,3}(?:'\d{3})+(?![\w'])")


def _grouped_number(value: str, prose: bool) -> bool:
    return "'" in value and not any(q in _GROUPED_NUMBER.sub("0", value) for q in "'\"`")


# 932150 (a Unix command as the first word) reads sentences: "tar is a dark brown…", "time flies…".
def _sentence(value: str, prose: bool) -> bool:
    return prose


# 942420/942421/942431/942432 count special characters, 942460 runs of four non-word characters.
# CRS's patterns run on bytes, where every byte of a UTF-8 letter outside ASCII is a non-word
# character and some (0xB4, 0x98, 0x99 of the acute accent and curly quotes) are in the special set:
# Cyrillic, Greek or CJK
# text — and its mojibake — reads as SQL punctuation. Counted on characters, the same rule holds.
_SPECIAL = re.compile("[~!@#$%^&*()\\-+={}\\[\\]|:;\"'\u00b4\u2019\u2018`<>]")
_ASCII_NON_WORD_RUN = re.compile(r"[\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]{4}")


def _fewer_specials(limit: int) -> Callable[[str, bool], bool]:
    def check(value: str, prose: bool) -> bool:
        return not value.isascii() and len(_SPECIAL.findall(value, 0, 65536)) < limit

    return check


def _no_ascii_non_word_run(value: str, prose: bool) -> bool:
    return not value.isascii() and _ASCII_NON_WORD_RUN.search(value) is None


BENIGN_SIDE: dict[int, Callable[[str, bool], bool]] = {
    942420: _fewer_specials(8),
    942421: _fewer_specials(3),
    942431: _fewer_specials(6),
    942432: _fewer_specials(2),
    942460: _no_ascii_non_word_run,
    921110: _no_request_line,
    921130: _no_line_break,
    921151: _line_break_in_text,
    942400: _counted_things,
    942360: _sql_keyword_in_words,
    942490: _grouped_number,
    932150: _sentence,
}
"""Rule id → check(value, value is sentences of words) that is True when the hit is benign."""
