"""A reader for the part of ModSecurity's SecLanguage that OWASP CRS request rules use.

Only `SecRule` directives are read (with `chain` links); everything else (`SecAction`,
`SecMarker`, `SecComponentSignature`…) is set-up that the CNAF does its own way. The result is
plain data: targets, operator, transformations and the few actions that matter for scoring.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_ACTION = re.compile(r"\s*([A-Za-z]+)(?::\s*('(?:[^'\\]|\\.)*'|[^,]*))?\s*(?:,|$)")


@dataclass(frozen=True, slots=True)
class Target:
    """One variable of a rule: `ARGS`, `REQUEST_HEADERS:User-Agent`, `!REQUEST_COOKIES:/__utm/`."""

    collection: str  # upper-case: ARGS, REQUEST_HEADERS, XML…
    key: str | None = None  # literal key (lower-cased) or regex source when `key_is_regex`
    key_is_regex: bool = False
    exclude: bool = False
    count: bool = False  # `&ARGS`: number of items, not supported for matching

    def key_matches(self, name: str) -> bool:
        if self.key is None:
            return True
        if self.key_is_regex:
            return re.search(self.key, name, re.I) is not None
        return name.lower() == self.key


@dataclass(slots=True)
class RuleLink:
    """One `SecRule` line: the first of a rule, or a `chain` link after it."""

    targets: list[Target]
    operator: str  # rx, pm, pmFromFile, detectSQLi, contains, …
    argument: str
    negated: bool
    transforms: list[str]
    actions: dict[str, list[str]]


@dataclass(slots=True)
class SecRule:
    links: list[RuleLink]
    source: str  # file name
    line: int
    rule_id: int = 0
    severity: str = ""
    paranoia_level: int = 1
    msg: str = ""
    tags: list[str] = field(default_factory=list)


def _unquote_action(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == "'" and value[-1] == "'":
        value = value[1:-1].replace("\\'", "'")
    return value


def parse_actions(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    pos = 0
    while pos < len(text):
        m = _ACTION.match(text, pos)
        if not m or m.end() == pos:
            break
        out.setdefault(m.group(1), []).append(_unquote_action(m.group(2) or ""))
        pos = m.end()
    return out


def parse_targets(text: str) -> list[Target]:
    targets: list[Target] = []
    for raw in _split_targets(text):
        exclude = raw.startswith("!")
        count = raw.startswith("&")
        raw = raw.lstrip("!&")
        coll, sep, key = raw.partition(":")
        if not sep:
            targets.append(Target(coll.upper(), exclude=exclude, count=count))
        elif coll.upper() == "XML":
            targets.append(Target("XML", key=None, exclude=exclude, count=count))
        elif len(key) >= 2 and key.startswith("/") and key.endswith("/"):
            targets.append(Target(coll.upper(), key[1:-1], True, exclude, count))
        else:
            targets.append(Target(coll.upper(), key.strip("'").lower(), False, exclude, count))
    return targets


def _split_targets(text: str) -> list[str]:
    """Split on '|' except inside a /regex/ key."""
    parts: list[str] = []
    cur: list[str] = []
    in_regex = False
    for i, ch in enumerate(text):
        if ch == "/" and i > 0 and (text[i - 1] == ":" or in_regex):
            in_regex = not in_regex if text[i - 1] != "\\" else in_regex
        if ch == "|" and not in_regex:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if cur:
        parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """A double-quoted SecLanguage argument; only `\\"` is an escape (as in Apache's config reader)."""
    assert text[pos] == '"'
    out: list[str] = []
    i = pos + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] == '"':
            out.append('"')
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise ValueError("unterminated quoted argument")


def _read_word(text: str, pos: int) -> tuple[str, int]:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos < len(text) and text[pos] == '"':
        return _read_quoted(text, pos)
    end = pos
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[pos:end], end


def _directives(text: str) -> list[tuple[int, str]]:
    """Logical lines (backslash-newline joined), comments dropped, with their first line number."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf.append(stripped[:-1])
            continue
        buf.append(stripped)
        out.append((start, " ".join(buf)))
        buf = []
    if buf:
        out.append((start, " ".join(buf)))
    return out


def _parse_secrule(body: str) -> RuleLink:
    variables, pos = _read_word(body, 0)
    operator, pos = _read_word(body, pos)
    actions_text, _ = _read_word(body, pos)
    negated = operator.startswith("!")
    operator = operator.lstrip("!")
    if operator.startswith("@"):
        name, _, arg = operator[1:].partition(" ")
    else:  # a bare argument means @rx
        name, arg = "rx", operator
    actions = parse_actions(actions_text)
    transforms = [t for t in actions.get("t", []) if t and t != "none"]
    return RuleLink(parse_targets(variables), name, arg.strip(), negated, transforms, actions)


def parse_file(path: Path) -> list[SecRule]:
    """Every `SecRule` of one .conf file, chains folded into one rule."""
    rules: list[SecRule] = []
    pending: SecRule | None = None
    for line_no, directive in _directives(path.read_text(encoding="utf-8", errors="replace")):
        keyword, _, rest = directive.partition(" ")
        if keyword != "SecRule":
            pending = None
            continue
        link = _parse_secrule(rest)
        if pending is not None:
            pending.links.append(link)
        else:
            pending = SecRule([link], path.name, line_no)
            acts = link.actions
            pending.rule_id = int((acts.get("id") or ["0"])[0] or 0)
            pending.severity = (acts.get("severity") or [""])[0].upper()
            pending.msg = (acts.get("msg") or [""])[0]
            pending.tags = acts.get("tag", [])
            for tag in pending.tags:
                if tag.startswith("paranoia-level/"):
                    pending.paranoia_level = int(tag.rsplit("/", 1)[1])
            rules.append(pending)
        if "chain" not in link.actions:
            pending = None
    return rules
