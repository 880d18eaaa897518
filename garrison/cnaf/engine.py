"""The detection engine: request → findings, pure and in-process (the eval harness calls it directly).

No I/O and no state: what to do about a finding (alert, 403, ban) is the firewall's business.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache

from garrison.cnaf import crs
from garrison.cnaf.crs.refine import BENIGN_SIDE
from garrison.cnaf.crs.variables import Variable, header_variables, variables
from garrison.cnaf.decode import decode_path
from garrison.cnaf.detect import (
    arguments,
    attack_tools,
    cmdi,
    code_injection,
    lfi,
    prefilter,
    protocol,
    rfi,
    session_fixation,
    shellshock,
    sqli,
    xss,
)
from garrison.cnaf.fields import Field, extract
from garrison.cnaf.request import HttpRequest
from garrison.cnaf.structure import header_level, is_code_snippet, is_json_document
from garrison.policy.cnaf import CnafControls, CnafException

Detector = Callable[[str, Field], str | None]

# Order matters only for which finding is reported first for one field.
DETECTORS: tuple[tuple[str, Detector], ...] = (
    ("attack_tools", attack_tools.detect),
    ("shellshock", shellshock.detect),
    ("code_injection", code_injection.detect),
    ("cmdi", cmdi.detect),
    ("lfi", lfi.detect),
    ("rfi", rfi.detect),
    ("sqli", sqli.detect),
    ("xss", xss.detect),
)
# Their big regexes answer "cannot match" from one Hyperscan pass per text once `start_prefilter`
# has built the database (exact: see detect/prefilter.py); before that they run as written.
prefilter.GATE.wrap_modules([attack_tools, shellshock, code_injection, cmdi, lfi, rfi, sqli, xss])


def start_prefilter(*, background: bool = True) -> None:
    """Build the detectors' prefilter database (seconds the first time, then read from the cache)."""
    if background:
        threading.Thread(target=prefilter.GATE.build, name="cnaf-prefilter", daemon=True).start()
    else:
        prefilter.GATE.build()


_MAX_VALUE = 64 * 1024
# Values made only of word characters with single dots/dashes (ids, numbers, slugs, file names)
# cannot carry any of the attacks above; skipping them keeps the common request cheap.
_SAFE_VALUE = re.compile(r"[\w\-]*(?:\.[\w\-]+)*\Z", re.ASCII)
_SAFE_PATH = re.compile(r"(?:/[\w\-]+(?:\.[\w\-]+)*)*/?\Z", re.ASCII)
# The union of every detector's own pre-check: a value with none of these characters, substrings or
# words cannot trigger any detector, so this replaces eight calls for typical free text ("coffee
# beans"). Split into a character class, substring tests and a word-set lookup because one big
# case-insensitive alternation costs several microseconds per value in `re`.
_MAYBE_SIGNS = (
    r"--|://|\.\.|/(?:etc|proc|sys|var|bin|dev)|script|\.(?:ini|ht|ssh|aws|git|env)|system32|winnt|web-inf|"
    r"web\.config|php\]|0x(?:2e|2f|5c)"
)
_MAYBE_CHARS = re.compile(r"['\"`;#()=<>|&@{}$%\\\n\r\x00*]|" + _MAYBE_SIGNS)  # on lower-cased text
# The same for a whole raw query string, where '&' and '=' are separators (encodings start with '%').
_MAYBE_CHARS_QUERY = re.compile(r"['\"`;#()<>|@{}$%\\\n\r\x00*]|" + _MAYBE_SIGNS)
# For CRS: a query string with anything but word characters, '+', ',', '-' and the separators.
_CRS_QUERY_SIGNS = re.compile(r"[^\w&=+,\-]")
_MAYBE_WORDS = frozenset(
    [
        "union",
        "select",
        "sleep",
        "benchmark",
        "waitfor",
        "or",
        "and",
        "powershell",
        "cmd",
        "nc",
        "bash",
        "sh",
        "java",
        "ognl",
        "classloader",
    ]
)
# Every byte that is not a-z becomes a space: the words of a lower-cased text are then its split()
# — the runs of `[a-z]+`, as a regex would find them, several times faster (a UTF-8 multi-byte
# character is all bytes >= 0x80, so it separates words as it does in the text).
_NOT_LETTER = bytes(c if 0x61 <= c <= 0x7A else 0x20 for c in range(256))


def has_maybe_word(low: str) -> bool:
    """Whether the lower-cased `low` holds one of `_MAYBE_WORDS` as a whole run of letters a-z."""
    words = low.encode("utf-8", "surrogatepass").translate(_NOT_LETTER).decode("ascii").split()
    return not _MAYBE_WORDS.isdisjoint(words)


def maybe_attack(value: str, signs: re.Pattern[str] = _MAYBE_CHARS) -> bool:
    """False only when no detector could fire on `value` (a cheap superset of their triggers)."""
    low = value.lower()
    if signs.search(low):
        return True
    return has_maybe_word(low)


VALUE_AUDIT_LIMIT = 256


@dataclass(frozen=True, slots=True)
class Finding:
    attack: str
    field: str  # e.g. "query:id", "header:User-Agent", "body:user.name"
    param: str
    value: str  # decoded, truncated for the audit
    reason: str


def _excepted(exceptions: list[CnafException], path: str, attack: str, param: str | None) -> bool:
    for ex in exceptions:
        if ex.attack not in ("*", attack):
            continue
        if not fnmatchcase(path, ex.path):
            continue
        if ex.param is None or (param is not None and fnmatchcase(param, ex.param)):
            return True
    return False


_LFI = next(fn for name, fn in DETECTORS if name == "lfi")
_SHELLSHOCK = shellshock.detect
_CODE = code_injection.detect
_TOOLS = next(fn for name, fn in DETECTORS if name == "attack_tools")
Hits = tuple[tuple[str, str], ...]  # (attack class, reason) for every class that fired
_cache: OrderedDict[tuple[str, str, str], Hits] = OrderedDict()
_CACHE_MAX = 8192
_CACHE_VALUE_MAX = 2048


def _scan(fld: Field, value: str) -> Hits:
    """Every detector on one value. Pure in (location, name, value), hence cacheable."""
    loc = fld.location
    if loc == "raw_header":
        return tuple(
            (name, reason)
            for name, fn in (("shellshock", _SHELLSHOCK), ("code_injection", _CODE))
            if (reason := fn(value, fld)) is not None
        )
    if (loc == "filename" or (loc == "header" and fld.name.lower() in code_injection.FILENAME_HEADERS)) and (
        reason := code_injection.script_upload(value)
    ):
        return (("code_injection", reason),)
    if loc == "path":
        if _SAFE_PATH.match(value):  # still check the path for /etc/passwd-like names
            reason = _LFI(value, fld)
            return (("lfi", reason),) if reason else ()
        detectors = DETECTORS
    elif loc != "header" and not loc.endswith("_name") and _SAFE_VALUE.match(value):
        return ()
    elif not maybe_attack(value):
        if loc != "header":
            return ()
        reason = _TOOLS(value, fld)
        return (("attack_tools", reason),) if reason else ()
    else:
        detectors = DETECTORS
    hits: list[tuple[str, str]] = []
    for name, fn in detectors:
        reason = fn(value, fld)
        if reason is not None:
            hits.append((name, reason))
    return tuple(hits)


def scan(fld: Field) -> Hits:
    """`_scan` behind a bounded cache: header values (User-Agent, Referer, cookies) repeat a lot."""
    value = fld.value[:_MAX_VALUE]
    if len(value) > _CACHE_VALUE_MAX:
        return _scan(fld, value)
    key = (fld.location, fld.name, value)
    hit = _cache.get(key)
    if hit is None:
        hit = _scan(fld, value)
        if len(_cache) >= _CACHE_MAX:
            _cache.popitem(last=False)  # oldest first, O(1)
        _cache[key] = hit
    return hit


def _plain_query(query: str, crs_on: bool) -> bool:
    """No detector could fire on any part of this raw query string: it is not split into fields.
    With CRS on, more characters count (its rules read `ftp?`, `http://x.y`)."""
    low = query.lower()
    if crs_on:
        if _CRS_QUERY_SIGNS.search(low):
            return False
        # Only word characters and & = + , - are left: of `_MAYBE_CHARS_QUERY` just these
        # substrings can still be there (the same test, without its slow alternation)
        if "--" in low or "script" in low or "system32" in low or "winnt" in low or "web-inf" in low:
            return False
    elif _MAYBE_CHARS_QUERY.search(low):
        return False
    return not has_maybe_word(low)


def request_fields(req: HttpRequest, *, crs_on: bool) -> tuple[list[Field], bool]:
    """The request's fields, and whether its target is plain (no CRS URI/query variables needed):
    a query nothing could fire on is not split (the common request stays cheap)."""
    query = req.query
    split = bool(query) and not _plain_query(query, crs_on)
    return extract(req, query=split), not split and _SAFE_PATH.match(req.path) is not None


def detection_key(req: HttpRequest, crs_on: bool) -> tuple[tuple[object, ...], bool]:
    """What `inspect` on this body-less request depends on, as a cache key, and whether a plain
    query string was left out of it. A plain query (see `request_fields`) under a plain path is
    read by nothing: the own detectors skip it whole, CRS's URI/query variables are left out for a
    plain target (and `REQUEST_LINE` needs a '('), and it names no session id. So requests that
    differ only in such a query (`?page=2`, `?page=3`) share one result — except for findings
    that quote the request line, which the caller must not share (see `Firewall._inspect`)."""
    target = req.target
    path, sep, query = target.partition("?")
    if (
        sep
        and _SAFE_PATH.match(path) is not None
        and not session_fixation.may_name_session(query)
        and not arguments.may_override_method(query)
        and _plain_query(query, crs_on)
    ):
        return (req.method, path, crs_on, req.version, tuple(req.headers)), True
    return (req.method, target, crs_on, req.version, tuple(req.headers)), False


def inspect(req: HttpRequest, controls: CnafControls) -> list[Finding]:
    """At most one finding per attack class whose effect is not 'disable', exceptions applied."""
    findings: list[Finding] = []
    seen: set[str] = set()
    path = decode_path(req.path)
    exceptions = controls.exceptions
    effect_for = controls.effect_for
    if effect_for("protocol") != "disable":
        violation = protocol.check(req, controls.max_header_bytes, controls.protocol)
        if violation and not _excepted(exceptions, path, "protocol", None):
            findings.append(
                Finding("protocol", "request", "", req.request_line[:VALUE_AUDIT_LIMIT], violation)
            )
            seen.add("protocol")
    rules = crs.current() if controls.crs.enabled else None
    fields, plain = request_fields(req, crs_on=rules is not None)
    for fld in fields:
        for name, reason in scan(fld):
            if name in seen or effect_for(name) == "disable":
                continue
            if exceptions and _excepted(exceptions, path, name, fld.name):
                continue
            findings.append(Finding(name, fld.label, fld.name, fld.value[:VALUE_AUDIT_LIMIT], reason))
            seen.add(name)
    if "session_fixation" not in seen and effect_for("session_fixation") != "disable":
        reason = session_fixation.check(req, fields)
        if reason is not None and not _excepted(exceptions, path, "session_fixation", None):
            findings.append(
                Finding("session_fixation", "request", "", req.target[:VALUE_AUDIT_LIMIT], reason)
            )
            seen.add("session_fixation")
    if rules is not None:
        findings.extend(_crs_findings(rules, req, fields, controls, path, seen, plain_target=plain))
    return findings


# A value made only of letters, digits, spaces and , - _ (and no SQL keyword) is skipped: CRS rules
# do match some such words (a command name at the start, `update`, `varchar`), but on everyday
# text (search terms, names) that is the largest source of false positives, and the cost.
_CRS_PLAIN = re.compile(r"[A-Za-z0-9_ ,\-]*\Z")
# Markdown inline code after a space (`wget`, `/confirm`): CRS reads the backtick as a shell
# substitution; the CNAF's own cmdi detector already treats it as Markdown, so CRS sees the text.
# A raster image as a data URI (avatars, pasted screenshots) is inert; CRS's data: rules would flag it.
_IMAGE_DATA_URI = re.compile(
    r"data:image/(?:png|jpe?g|gif|webp|bmp|avif|x-icon);base64,[A-Za-z0-9+/=\s]+\Z", re.I
)
# XML declarations and processing instructions (`<?xml …?>`, `<?xml-stylesheet …?>`, `<?xpacket …?>`)
# are inert markup that CRS's character-count and quote rules score as SQL; PHP tags are not matched.
_XML_PI = re.compile(r"<\?(?:xml(?:-stylesheet)?|xsl-stylesheet|xpacket)\b[^<>]{0,512}?\?>", re.I)
_WORD = re.compile(r"[A-Za-z]{2,}")
_PROSE_MIN = 60


def _looks_like_prose(value: str) -> bool:
    """Sentences of words (an advisory, a review, a support ticket): mostly letters and spaces,
    at least eight words. CRS's paranoia-level 2+ rules read SQL into such text ("select … from",
    "or", quotes); on prose only level-1 rules count."""
    if len(value) < _PROSE_MIN:
        return False
    letters = sum(c.isalpha() or c.isspace() for c in value)
    return letters >= 0.85 * len(value) and len(_WORD.findall(value)) >= 8


# Parameter names that say the value is a link (url, return_to, redirect_uri, website, next…) or
# free text people paste links into (a search box, a comment, a message, a description): CRS's
# off-site-reference rule (931130) reads any URL as a remote include; there it is the point. (The
# own RFI detector and CRS's other RFI rules still read these parameters.)
_URL_PARAM = re.compile(
    r"(?:^|[_.\-\[])(?:url|uri|link|href|redirect|return|returnto|next|callback|continue|website|homepage|"
    r"webhook|feed|source|origin|referr?er|"
    r"q|query|search|term|keyword|text|message|msg|comment|body|content|description|note|bio|"
    r"subject|feedback|review|reply|caption|summary)s?(?:[_\-\]]|$)",
    re.I,
)


def _is_document(value: str) -> bool:
    """Several lines of text (a code snippet, Markdown, an address): like prose, CRS's level-2+
    rules read SQL into its punctuation; only level-1 rules count on it."""
    return value.count("\n", 0, 4096) >= 2


_CAMEL = re.compile(r"([a-z0-9])([A-Z])")


@lru_cache(maxsize=4096)
def _url_param(name: str) -> bool:
    """`callbackUrl`, `return_to`, `redirect-uri`, `links[0]`, `q`, `comment[body]`: a parameter
    meant to hold a link, or free text that links are pasted into."""
    return _URL_PARAM.search(_CAMEL.sub(r"\1_\2", name)) is not None


_FREE_TEXT = frozenset(
    {"ARGS_GET", "ARGS_POST", "ARGS_GET_NAMES", "ARGS_POST_NAMES", "REQUEST_COOKIES", "XML"}
)
_MARKDOWN_CODE = re.compile(r"(?:(?<=\s)|^)`([^`\n]{1,60})`(?=[\s.,;:!?)]|$)")


def crs_hits(
    rules: crs.CrsRuleSet,
    req: HttpRequest,
    fields: list[Field],
    controls: CnafControls,
    path: str,
    disabled: set[int] | frozenset[int],
    *,
    plain_target: bool = False,
) -> dict[int, tuple[crs.CrsRule, Field]]:
    """The CRS rules (up to the paranoia level, not `disabled`) that fire on the request, each with
    the first field it fired on. Public for the benchmark's exclusion tuning."""
    first: dict[int, tuple[crs.CrsRule, Field]] = {}
    ctx = _HitContext(rules, req, controls, path, disabled)
    for var in variables(req, fields, plain_target=plain_target, headers=False):
        ctx.consider(var, first)
    # Header lines repeat across requests (User-Agent, Accept, Accept-Language…) even when others
    # (Cookie, Referer) are new: each line's hits are memoised (see `_HeaderMemo`).
    memo = _header_memo.current(rules, controls, disabled)
    head: dict[int, tuple[crs.CrsRule, Field]] = {}
    for name, value in req.headers:
        line = memo.get(name, value) if memo is not None else None
        if line is None:
            line = {}
            ctx.headers = None  # set again only if a rule needs the other headers (then not memoised)
            for var in header_variables(name, value):
                ctx.consider(var, line)
            if memo is not None and ctx.headers is None:
                memo.put(name, value, line)
        for rid, hit in line.items():
            head.setdefault(rid, hit)
    for rid, hit in head.items():
        first.setdefault(rid, hit)
    return first


_HeaderHits = dict[int, tuple[crs.CrsRule, Field]]


class _HeaderMemo:
    """One header line → the CRS rules it fires (with its Field), across requests.

    Exact: an entry is only what `_HitContext.consider` gave on that line alone, valid for one
    (rule set, policy object, disabled rules) generation — any change of these empties the memo.
    Lines whose hits depended on the rest of the request (context rules reading Referer/Host) are
    not stored, nor are memos kept under path-dependent exceptions. Bounded in entries and in the
    length of a line (a longer line is inspected every time)."""

    MAX_ENTRIES = 4096
    MAX_LINE = 2048

    def __init__(self) -> None:
        self._gen: tuple[object, ...] = ()
        self._lines: OrderedDict[tuple[str, str], _HeaderHits] = OrderedDict()

    def current(
        self, rules: crs.CrsRuleSet, controls: CnafControls, disabled: set[int] | frozenset[int]
    ) -> _HeaderMemo | None:
        """The memo for this generation (emptied if it changed), or None when it must not be used."""
        if controls.exceptions:
            return None
        gen = (rules, controls, disabled)
        if len(self._gen) != 3 or any(a is not b for a, b in zip(self._gen, gen, strict=True)):
            self._lines.clear()
            self._gen = gen
        return self

    def get(self, name: str, value: str) -> _HeaderHits | None:
        hits = self._lines.get((name, value))
        if hits is not None:
            self._lines.move_to_end((name, value))  # least recently used goes first
        return hits

    def put(self, name: str, value: str, hits: _HeaderHits) -> None:
        if len(name) + len(value) > self.MAX_LINE:
            return
        if len(self._lines) >= self.MAX_ENTRIES:
            self._lines.popitem(last=False)  # oldest first, O(1)
        self._lines[(name, value)] = hits

    def __len__(self) -> int:
        return len(self._lines)


_header_memo = _HeaderMemo()


class _HitContext:
    """What deciding one variable's CRS hits needs from its request (see `crs_hits`)."""

    def __init__(
        self,
        rules: crs.CrsRuleSet,
        req: HttpRequest,
        controls: CnafControls,
        path: str,
        disabled: set[int] | frozenset[int],
    ) -> None:
        self.rules, self.req, self.controls, self.path, self.disabled = rules, req, controls, path, disabled
        self.level = controls.crs.paranoia_level
        self.headers: dict[str, str] | None = None
        self.json_body = bool(req.body) and "json" in (req.header("content-type") or "").lower()

    def consider(self, var: Variable, first: dict[int, tuple[crs.CrsRule, Field]]) -> None:
        value = var.value[:_MAX_VALUE]
        if not value or (_CRS_PLAIN.match(value) and not has_maybe_word(value.lower())):
            return
        if var.collection in _FREE_TEXT:
            if "`" in value and " " in value:
                value = _MARKDOWN_CODE.sub(r"\1", value)
            if "<?" in value:
                value = _XML_PI.sub(" ", value).strip()
            if value.startswith("data:image/") and _IMAGE_DATA_URI.match(value):
                return
            if is_code_snippet(var.key, value, structured=var.collection == "ARGS_POST" and self.json_body):
                return  # self-contained code in a field made for code: the own detectors decide
            sentences = _looks_like_prose(value)
            prose = sentences or _is_document(value) or is_json_document(value)
            max_level = 1 if prose else self.level
        else:
            sentences = False
            if var.collection == "REQUEST_HEADERS" and (level := header_level(var.key, value)) is not None:
                if level == 0:
                    return
                max_level = min(level, self.level)
            else:
                max_level = self.level
        controls = self.controls
        for rule in self.rules.match(var.collection, var.key, value):
            if rule.paranoia_level > max_level or rule.rule_id in self.disabled or rule.rule_id in first:
                continue
            benign = BENIGN_SIDE.get(rule.rule_id)
            if benign is not None and benign(value, sentences):
                continue
            if rule.context:  # chain links on the request (Referer, Host): not part of the cached match
                if rule.capture is not None and _url_param(var.key):
                    continue  # an off-site link is what a parameter named url/link/redirect… is for
                if self.headers is None:
                    self.headers = {}
                    for hname, hvalue in self.req.headers:
                        self.headers.setdefault(hname.lower(), hvalue)
                if not rule.context_ok(value, self.headers):
                    continue
            # a class that is disabled, or excepted for this parameter, adds nothing to the score
            if controls.effect_for(rule.attack) == "disable" or (
                controls.exceptions and _excepted(controls.exceptions, self.path, rule.attack, var.field.name)
            ):
                continue
            first[rule.rule_id] = (rule, var.field)


@lru_cache(maxsize=64)
def _disabled_rules(listed: tuple[int, ...], default_exclusions: bool) -> frozenset[int]:
    return frozenset(listed) | (crs.DEFAULT_EXCLUDED_RULES if default_exclusions else frozenset())


def _crs_findings(
    rules: crs.CrsRuleSet,
    req: HttpRequest,
    fields: list[Field],
    controls: CnafControls,
    path: str,
    seen: set[str],
    *,
    plain_target: bool = False,
) -> list[Finding]:
    """CRS anomaly scoring: rules up to the paranoia level add their severity; at the threshold,
    each attack class that scored becomes one finding (named after its first rule)."""
    settings = controls.crs
    disabled = _disabled_rules(tuple(settings.disabled_rules), settings.default_exclusions)
    rules.skip(disabled)
    first = crs_hits(rules, req, fields, controls, path, disabled, plain_target=plain_target)
    score = sum(rule.score for rule, _ in first.values())
    if score < settings.anomaly_threshold:
        return []
    # Like CRS's per-category scores: a class is reported when its own rules reach the threshold,
    # and the top-scoring class always is (so a blocked request names at least one class).
    by_class: dict[str, int] = {}
    for rule, _ in first.values():
        by_class[rule.attack] = by_class.get(rule.attack, 0) + rule.score
    top = max(by_class, key=lambda c: by_class[c])
    out: list[Finding] = []
    for rule, fld in sorted(first.values(), key=lambda rf: -rf[0].score):
        name = rule.attack
        if name in seen or (name != top and by_class[name] < settings.anomaly_threshold):
            continue
        reason = (
            f"OWASP CRS {rule.rule_id}: {rule.msg} (paranoia level {rule.paranoia_level}, "
            f"anomaly score {score})"
        )
        out.append(Finding(name, fld.label, fld.name, fld.value[:VALUE_AUDIT_LIMIT], reason))
        seen.add(name)
    return out
