"""SQL injection: a libinjection-style tokenizer and fingerprint matcher.

Like libinjection, the value is tokenized three times — as written, as if it continued a
single-quoted string, and a double-quoted one — because an injection has to break out of the
context the application pastes it into. Each token stream is folded into a short fingerprint of
token types and matched against patterns of a *breakout followed by SQL*. Plain prose that merely
contains SQL words ("select a plan", "O'Brien") never forms such a fingerprint, which is what keeps
false positives low without libinjection's 9,000-entry fingerprint table.
"""

from __future__ import annotations

import re

from garrison.cnaf.fields import Field

# Token types (one character each, so fingerprints are strings matched with regexes):
#  q breakout of the surrounding string  s string  n number  v @variable  b bareword  k keyword  E statement  U union  F from
#  O order/group/having/limit/into  & logic  o operator  f function  X dangerous function
#  a arithmetic  c comment (C: long trailing text)  ( ) , ; .
_STATEMENTS = frozenset(
    [
        "select",
        "insert",
        "update",
        "delete",
        "drop",
        "create",
        "alter",
        "truncate",
        "exec",
        "execute",
        "declare",
        "shutdown",
        "grant",
        "revoke",
        "merge",
        "call",
        "replace",
    ]
)
_LOGIC = frozenset({"and", "or", "xor", "not", "div", "like", "rlike", "regexp", "sounds", "is", "in"})
_CLAUSES = frozenset(
    {"order", "group", "having", "limit", "into", "procedure", "offset", "outfile", "dumpfile"}
)
_KEYWORDS = frozenset(
    [
        "where",
        "null",
        "as",
        "by",
        "all",
        "distinct",
        "top",
        "case",
        "when",
        "then",
        "else",
        "end",
        "between",
        "exists",
        "values",
        "set",
        "table",
        "from",
        "information_schema",
        "sysobjects",
        "syscolumns",
        "collate",
        "binary",
        "escape",
        "asc",
        "desc",
    ]
)
_DANGEROUS = frozenset(
    [
        "sleep",
        "benchmark",
        "pg_sleep",
        "waitfor",
        "load_file",
        "extractvalue",
        "updatexml",
        "xp_cmdshell",
        "sp_executesql",
        "dbms_pipe",
        "utl_inaddr",
        "utl_http",
        "ctxsys",
        "dbms_lock",
        "randomblob",
        "make_set",
        "elt",
        "geometrycollection",
        "multipoint",
        "polygon",
        "exp",
        "floor_rand",
        "name_const",
        "row_count",
        "get_lock",
        "sys_eval",
        "sys_exec",
        "lo_import",
        "lo_export",
        "pg_read_file",
        "copy",
    ]
)
_FUNCTIONS = frozenset(
    [
        "char",
        "chr",
        "concat",
        "concat_ws",
        "substring",
        "substr",
        "mid",
        "ascii",
        "ord",
        "count",
        "version",
        "database",
        "user",
        "current_user",
        "system_user",
        "schema",
        "cast",
        "convert",
        "hex",
        "unhex",
        "length",
        "len",
        "group_concat",
        "if",
        "ifnull",
        "iif",
        "isnull",
        "coalesce",
        "floor",
        "rand",
        "md5",
        "sha1",
        "char_length",
        "lower",
        "upper",
        "replace",
        "nullif",
    ]
)
_WORD = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_NUMBER = re.compile(r"0x[0-9a-fA-F]+|0b[01]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?")
_OPS = ("<=>", "!=", "<>", "<=", ">=", ":=", "||", "&&", "==")
_MAX_TOKENS = 12
_SHORT_COMMENT = 24

_PATTERNS = re.compile(
    "|".join(
        [
            # a string context broken out of, then SQL
            r"^q\)*(?:&\(*(?:[nsvfX(]|b(?:o|c|\)|$))|;[EXsn]|U|c|X|o[nsvf(]|Ok?(?:n|O|[bs]?[co,;O])|k?E(?!s|$))",
            # a numeric context followed by SQL
            r"^n\)*(?:&\(*(?:X|f|[nsvb]\)*o)|;[EXsn]|U|X|Ok?[nbs]?(?:c|o|,|\)|;|$)|k?E|\)+c)",
            # anywhere: union select, stacked statement, tautology, dangerous call, subquery
            r"Uk?\(*E",
            r"[nsvq)];E",
            r"&\(*[nsvf]\)*o\(*[nsvf]",
            r"&\(*[sn]\)*c",
            r"[&;,(oEUn]X",
            r"^X\(",
            r"[o&,U]\(+E.*?F",
            r"Ok?[nb]\)*c",
            r"^[qn]\)*o?\(+E",
        ]
    )
)


def tokenize(text: str, quote: str = "") -> str:
    """Fingerprint of `text` as if it followed an opening `quote` ('' for no string context)."""
    out: list[str] = []
    i = 0
    n = len(text)
    if quote:
        end = text.find(quote)
        if end < 0:
            return ""
        out.append("q")  # the string the application opened, closed by the input: a breakout
        i = end + 1
    while i < n and len(out) < _MAX_TOKENS:
        ch = text[i]
        if ch in " \t\r\n\x0b\x0c\x00\xa0":
            i += 1
            continue
        if ch in "'\"`":
            end = text.find(ch, i + 1)
            while end >= 0 and ch != "`" and end + 1 < n and text[end + 1] == ch:  # '' escape
                end = text.find(ch, end + 2)
            out.append("s" if ch != "`" else "b")
            if end < 0:
                break
            i = end + 1
            continue
        if ch == "#" or (ch == "-" and text.startswith("--", i)):
            # A comment that ends the value (admin'--) is the classic truncation; a long line of
            # text after '#'/'--' is prose or Markdown ("#cgo …"), typed 'C' and matched by nothing.
            eol = text.find("\n", i)
            rest = text[i + 2 : eol if eol >= 0 else n]
            out.append("c" if len(rest.strip()) <= _SHORT_COMMENT else "C")
            break
        if ch == "/" and text.startswith("/*", i):
            if text.startswith("/*!", i):  # MySQL executable comment: its body is code
                j = i + 3
                while j < n and text[j].isdigit():
                    j += 1
                i = j
                continue
            end = text.find("*/", i + 2)
            if end < 0:
                out.append("c")
                break
            i = end + 2
            continue
        if ch == "*" and text.startswith("*/", i):
            i += 2
            continue
        if ch == "@":
            m = _WORD.match(text, i + 2 if text.startswith("@@", i) else i + 1)
            out.append("v")
            i = m.end() if m else i + 1
            continue
        if ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit()):
            m = _NUMBER.match(text, i)
            assert m is not None
            j = m.end()
            if j < n and (text[j].isalpha() or text[j] == "_"):  # 1abc: a name, not a number
                m2 = _WORD.match(text, j)
                j = m2.end() if m2 else j + 1
                out.append("b")
            else:
                out.append("n")
            i = j
            continue
        m = _WORD.match(text, i)
        if m:
            word = m.group(0).lower()
            i = m.end()
            j = i
            while j < n and text[j] in " \t\r\n":
                j += 1
            call = j < n and text[j] == "("
            if word == "union":
                out.append("U")
            elif word in _STATEMENTS:
                out.append("E" if not (word == "replace" and call) else "f")
            elif word == "from":
                out.append("F")
            elif word in _LOGIC:
                out.append("&" if word in ("and", "or", "xor", "div") else "o")
            elif word in _CLAUSES:
                out.append("O")
            elif word in _DANGEROUS and (call or word == "waitfor"):
                out.append("X")
            elif word in _FUNCTIONS and call:
                out.append("f")
            elif word == "where":
                out.append("W")
            elif word in _KEYWORDS:
                out.append("k")
            else:
                out.append("b")
            continue
        if ch in "(),;.":
            out.append(ch)
            i += 1
            continue
        op = next((o for o in _OPS if text.startswith(o, i)), None)
        if op is not None:
            out.append("&" if op in ("||", "&&") else "o")
            i += len(op)
            continue
        if ch in "+-*/%^~":
            out.append("a")  # arithmetic: prose is full of '/' and '-', comparisons are what inject
            i += 1
            continue
        if ch in "=<>!|&:":
            out.append("o")
            i += 1
            continue
        out.append("b")  # any other punctuation breaks words like a name would
        i += 1
    return "".join(out)


_QUICK = re.compile(r"['\"`;#()=<>|&@-]|/\*|\b(?:union|select|sleep|benchmark|waitfor|or|and)\b", re.I)


def fingerprints(value: str) -> list[str]:
    return [fp for fp in (tokenize(value), tokenize(value, "'"), tokenize(value, '"')) if fp]


# MSSQL procedures that run commands or reach the network: no legitimate input names them.
_MSSQL_PROCS = re.compile(
    r"\b(?:master\s*\.\s*\.\s*|master\.dbo\.|dbo\.)?(?:xp_cmdshell|xp_regread|xp_regwrite|xp_dirtree|"
    r"xp_fileexist|xp_servicecontrol|sp_oacreate|sp_oamethod|sp_makewebtask|sp_addextendedproc|"
    r"sp_configure\s*['\"]?\s*(?:xp_cmdshell|show advanced)|openrowset\s*\(|opendatasource\s*\()",
    re.I,
)
# NoSQL (MongoDB) query operators smuggled in as a parameter name (`user[$ne]=x`) or a JSON key.
_NOSQL_OPS = (
    r"\$(?:ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|expr|function|accumulator|or|and|nor|not|"
    r"elemMatch|all|size|type|mod|text|jsonSchema)"
)
_NOSQL_NAME = re.compile(rf"\[\s*{_NOSQL_OPS}\s*\]|^{_NOSQL_OPS}$")


# Every alternative of `_PATTERNS` needs one of the tokens q (a quote: only the quote-context
# tokenisations have it, and they need that quote in the value), U, E, X, O or & (one of the words
# below, or `&&`/`||`) — or, after a leading number n, `;` or a comment c (`#`, `--`, `/*`). A value
# with none of their sources cannot form a fingerprint that matches and is not tokenised at all
# (URLs, e-mail addresses, User-Agents). The first token can only be a number if the first character
# after blanks is a digit or '.' (or a comment was skipped: `/*` and `*/` always count). A tokenizer
# word is a run of [A-Za-z0-9_$] starting with no digit, so a trigger word (letters and '_' only) is
# also a run of the value split at everything but letters and '_'.
# tests/cnaf/test_detect_prefilter.py checks `_PATTERNS` against fingerprints without these tokens.
_TRIGGER_MARKS = ("'", '"', "&&", "||", "/*", "*/")
_AFTER_NUMBER_MARKS = (";", "#", "--")
_BLANKS = " \t\r\n\x0b\x0c\x00\xa0"  # what `tokenize` skips between tokens
TRIGGER_WORDS = frozenset({"union", "and", "or", "xor", "div"} | _STATEMENTS | _DANGEROUS | _CLAUSES)
_TRIGGER_BYTES = frozenset(w.encode("ascii") for w in TRIGGER_WORDS)
_WORD_BYTES = bytes(
    c + 32 if 0x41 <= c <= 0x5A else c if (0x61 <= c <= 0x7A or c == 0x5F) else 0x20 for c in range(256)
)


def may_fingerprint(value: str) -> bool:
    """False only when no fingerprint of `value` can match `_PATTERNS` (see `_TRIGGER_MARKS`)."""
    if any(mark in value for mark in _TRIGGER_MARKS):
        return True
    first = value.lstrip(_BLANKS)[:1]
    if (first.isdigit() or first == ".") and any(mark in value for mark in _AFTER_NUMBER_MARKS):
        return True
    words = value.encode("utf-8", "surrogatepass").translate(_WORD_BYTES).split()
    return not _TRIGGER_BYTES.isdisjoint(words)


def detect(value: str, field: Field) -> str | None:
    if field.location.endswith("_name") and "$" in value and _NOSQL_NAME.search(value):
        return "NoSQL operator injection"
    if "_" in value and _MSSQL_PROCS.search(value):
        return "SQL injection (MSSQL command procedure)"
    if len(value) < 2 or not _QUICK.search(value) or not may_fingerprint(value):
        return None
    for fp in fingerprints(value):
        if _PATTERNS.search(fp):
            return f"SQL injection (fingerprint {fp})"
    return None
