"""OWASP CRS request rules, loaded from an installed rule set and compiled for the CNAF.

The detection knowledge (regular expressions, phrase lists, targets, transformations, paranoia
levels, severities) stays in the CRS files on disk — Debian's `modsecurity-crs` package by default —
and is read at start-up; nothing of it is copied into Garrison. What the CNAF supports of a rule:
`@rx @pm @pmFromFile @contains @beginsWith @endsWith @streq @detectSQLi @detectXSS` on request
variables, transformations (see `transforms.py`), and `chain` links that re-test the matched value.
Rules needing anything else (TX variables, counters, @validateByteRange, IP reputation) are skipped
and counted in `stats` — the CNAF's own protocol checks and detectors cover that ground.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from garrison.cnaf.crs.matcher import MultiMatcher, Pattern, compile_python, to_python_regex
from garrison.cnaf.crs.seclang import RuleLink, SecRule, Target, parse_file
from garrison.cnaf.crs.transforms import TRANSFORMS, apply, pipeline_of

log = logging.getLogger("garrison.cnaf.crs")

# CRS rule file (by number) → CNAF attack class. 943 (session fixation) and the 920 protocol file
# are left to the CNAF's own protocol checks; 949/959 are CRS's own scoring.
FILE_CLASS: dict[str, str] = {
    "913": "attack_tools",
    "921": "protocol",
    "930": "lfi",
    "931": "rfi",
    "932": "cmdi",
    "933": "code_injection",
    "934": "code_injection",
    "941": "xss",
    "942": "sqli",
    "943": "session_fixation",
    "944": "code_injection",
}
_SHELLSHOCK_RULES = frozenset({932170, 932171})
SEVERITY_SCORE = {"CRITICAL": 5, "ERROR": 4, "WARNING": 3, "NOTICE": 2}
_COLLECTION_ALIASES = {"REQUEST_URI_RAW": "REQUEST_URI"}
# A rule target → the variable collections it reads (ARGS is ARGS_GET + ARGS_POST).
_COVERS = {
    "ARGS": ("ARGS_GET", "ARGS_POST"),
    "ARGS_NAMES": ("ARGS_GET_NAMES", "ARGS_POST_NAMES"),
}
SUPPORTED_COLLECTIONS = frozenset(
    {
        "ARGS",
        "ARGS_NAMES",
        "ARGS_GET",
        "ARGS_POST",
        "ARGS_GET_NAMES",
        "ARGS_POST_NAMES",
        "REQUEST_COOKIES",
        "REQUEST_COOKIES_NAMES",
        "REQUEST_HEADERS",
        "REQUEST_HEADERS_NAMES",
        "REQUEST_FILENAME",
        "REQUEST_BASENAME",
        "REQUEST_URI",
        "REQUEST_LINE",
        "QUERY_STRING",
        "REQUEST_BODY",
        "FILES",
        "FILES_NAMES",
        "XML",
    }
)
_ARGS_LIKE = (
    "ARGS_GET",
    "ARGS_POST",
    "ARGS_GET_NAMES",
    "ARGS_POST_NAMES",
    "REQUEST_COOKIES",
    "REQUEST_COOKIES_NAMES",
    "XML",
)
_CHAIN_SAME_VALUE = frozenset({"MATCHED_VAR", "MATCHED_VARS"})
_LITERAL_OPS = {
    "contains": ("", ""),
    "beginsWith": ("^", ""),
    "endsWith": ("", r"\Z"),
    "streq": ("^", r"\Z"),
}
_SPECIAL_OPS = frozenset({"detectSQLi", "detectXSS"})


def _literal(text: str) -> str:
    """A regex matching `text` literally, written so both PCRE/Hyperscan and Python read it the same."""
    return "".join(c if c.isalnum() or ord(c) > 0x7F else f"\\x{ord(c):02x}" for c in text)


def _phrases(rule_dir: Path, link: RuleLink) -> list[str]:
    if link.operator == "pm":
        return link.argument.split()
    words: list[str] = []
    for name in link.argument.split():
        for line in (rule_dir / name).read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                words.append(line)
    return words


def _link_pattern(rule_dir: Path, link: RuleLink, pid: int) -> Pattern | None:
    """The operator of a link as a `Pattern` (phrase lists stay phrases for Hyperscan)."""
    if link.operator in ("pm", "pmFromFile", "pmf"):
        words = _phrases(rule_dir, link)
        return Pattern(pid, "", True, tuple(sorted(set(words)))) if words else None
    rx = _link_regex(rule_dir, link)
    return Pattern(pid, rx[0], rx[1]) if rx else None


def _link_regex(rule_dir: Path, link: RuleLink) -> tuple[str, bool] | None:
    """(PCRE source, caseless) for the operator of one link; None if not expressible as a regex."""
    caseless = "lowercase" in link.transforms or "cmdLine" in link.transforms
    op = link.operator
    if op == "rx":
        return link.argument, caseless
    if op in ("pm", "pmFromFile", "pmf"):
        words = _phrases(rule_dir, link)
        if not words:
            return None
        return "(?:" + "|".join(_literal(w) for w in sorted(set(words), key=len, reverse=True)) + ")", True
    if op in _LITERAL_OPS and "%{" not in link.argument:
        pre, post = _LITERAL_OPS[op]
        return pre + _literal(link.argument) + post, caseless
    return None


def _normalise_targets(targets: Iterable[Target]) -> list[Target]:
    out = []
    for t in targets:
        coll = _COLLECTION_ALIASES.get(t.collection, t.collection)
        out.append(Target(coll, t.key, t.key_is_regex, t.exclude, t.count) if coll != t.collection else t)
    return out


def _libinjection() -> tuple[Callable[[str], bool], Callable[[str], bool]] | None:
    try:
        import libinjection
    except ImportError:
        return None

    def sqli(value: str) -> bool:
        return bool(value) and bool(libinjection.is_sql_injection(value)["is_sqli"])

    def xss(value: str) -> bool:
        return bool(value) and bool(libinjection.is_xss(value)["is_xss"])

    return sqli, xss


def _context_step(link: RuleLink, first: RuleLink) -> ContextStep | None:
    """A chain link on the request around the value (see `ContextStep`), or None if unsupported."""
    if len(link.targets) != 1 or link.transforms:
        return None
    t = link.targets[0]
    if t.collection == "REQUEST_HEADERS" and t.key and not t.key_is_regex:
        if t.count and link.operator == "eq" and link.argument == "0" and not link.negated:
            return ContextStep("header_absent", header=t.key)
        if not t.count and link.operator == "rx" and not link.negated:
            try:
                return ContextStep(
                    "header_rx", header=t.key, regex=compile_python(to_python_regex(link.argument), False)
                )
            except re.error:
                return None
    if t.collection == "TX" and link.operator == "endsWith" and link.negated and _HOST_REF in link.argument:
        template = "%{tx.1}"
        if t.key_is_regex:  # the value a `setvar` of the first link stored under a matching name
            key = re.compile(t.key or "", re.I)
            for sv in first.actions.get("setvar", []):
                name, _, stored = sv.partition("=")
                if name.lower().startswith("tx.") and key.match(name[3:].replace("%{MATCHED_VAR_NAME}", "x")):
                    template = stored
                    break
            else:
                return None
        elif t.key != "1":
            return None
        return ContextStep("not_host", template=template, suffix=link.argument)
    return None


def _covers(target: str, collection: str) -> bool:
    return target == collection or collection in _COVERS.get(target, ())


@dataclass(slots=True)
class ChainTest:
    pipeline: tuple[str, ...]
    regex: re.Pattern[str]
    negated: bool

    def ok(self, value: str) -> bool:
        return (self.regex.search(apply(self.pipeline, value)) is not None) != self.negated


@dataclass(slots=True)
class ContextStep:
    """A chain link that reads the request around the value, not the value itself:
    `header_rx` (a header matches; its capture group 1 becomes the capture), `header_absent`
    (`&REQUEST_HEADERS:Referer "@eq 0"`), `not_host` (the capture, shaped by the `setvar`
    template that stored it, does not end with `suffix` naming the request's Host)."""

    kind: str
    header: str = ""
    regex: re.Pattern[str] | None = None
    template: str = "%{tx.1}"  # how the capture was stored (931130 stores ".%{tx.1}")
    suffix: str = "%{request_headers.host}"


_HOST_REF = "%{request_headers.host}"


@dataclass(slots=True)
class CrsRule:
    rule_id: int
    attack: str
    score: int
    paranoia_level: int
    msg: str
    pipeline: tuple[str, ...]
    include: list[Target]
    exclude: list[Target]
    chain: list[ChainTest] = field(default_factory=list)
    special: str = ""  # detectSQLi | detectXSS
    context: list[ContextStep] = field(default_factory=list)  # chain links on the request around it
    capture: re.Pattern[str] | None = None  # the first link's regex, for its group 1 (`capture`)
    keyed: bool = True  # targets name keys or exclusions: check the variable's key, not only its collection

    def __post_init__(self) -> None:
        self.keyed = bool(self.exclude) or any(t.key is not None for t in self.include)

    def applies(self, collection: str, key: str) -> bool:
        if not any(_covers(t.collection, collection) and t.key_matches(key) for t in self.include):
            return False
        return not any(_covers(t.collection, collection) and t.key_matches(key) for t in self.exclude)

    def chain_ok(self, value: str) -> bool:
        return all(c.ok(value) for c in self.chain)

    def context_ok(self, value: str, headers: dict[str, str]) -> bool:
        """The request-context links (`headers`: lower-cased name → first value) hold."""
        captured = ""
        if self.capture is not None:
            m = self.capture.search(apply(self.pipeline, value))
            captured = (m.group(1) or "") if m is not None and m.lastindex else ""
        for step in self.context:
            if step.kind == "header_absent":
                if step.header in headers:
                    return False
            elif step.kind == "header_rx":
                h = headers.get(step.header)
                m = step.regex.search(h) if h is not None and step.regex is not None else None
                if m is None:
                    return False
                captured = (m.group(1) or "") if m.lastindex else ""
            else:  # not_host
                stored = step.template.replace("%{tx.1}", captured).lower()
                if stored.endswith(step.suffix.replace(_HOST_REF, headers.get("host", "")).lower()):
                    return False
        return True


@dataclass(slots=True)
class RuleMatch:
    rule: CrsRule
    collection: str
    key: str


@dataclass(slots=True)
class LoadStats:
    files: int = 0
    rules: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    python_only: int = 0
    hyperscan: bool = False
    libinjection: bool = False

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


# A value of word characters (and . : @ + = -) separated by single spaces, and the transformations
# that leave such a value as it is (cmdLine only lower-cases it; its patterns match caselessly).
_INERT = re.compile(r"[\w.:@+=\-]*(?: [\w.:@+=\-]+)*\Z")
_INERT_SAFE = frozenset(
    {
        "cmdLine",
        "compressWhitespace",
        "removeNulls",
        "replaceNulls",
        "replaceComments",
        "normalisePath",
        "normalizePath",
        "normalisePathWin",
        "normalizePathWin",
        "cssDecode",
        "escapeSeqDecode",
    }
)
_CACHE_MAX = 16384
_CACHE_VALUE_MAX = 2048
_APPLIES_MAX = 65536
_APPLIES_KEY_MAX = 256


class CrsRuleSet:
    """The compiled rules of one CRS directory: `match(collection, key, value)` → rules that fire."""

    def __init__(self, rule_dir: Path, *, use_hyperscan: bool = True) -> None:
        self.rule_dir = rule_dir
        self.stats = LoadStats()
        self.rules: list[CrsRule] = []
        self.version = ""
        self._special = _libinjection()
        self.stats.libinjection = self._special is not None
        by_pipeline: dict[tuple[str, ...], list[Pattern]] = {}
        files = sorted(rule_dir.glob("REQUEST-9*.conf"))
        for path in files:
            num = path.name.split("-")[1][:3] if path.name.count("-") >= 2 else ""
            attack = FILE_CLASS.get(num)
            if attack is None:
                continue
            self.stats.files += 1
            for sec in parse_file(path):
                rule = self._compile(sec, attack, by_pipeline)
                if rule is not None:
                    self.rules.append(rule)
        self.stats.rules = len(self.rules)
        patterns = {p.pid: p for pats in by_pipeline.values() for p in pats}
        # One Hyperscan database per (group of collections, pipeline), holding only the rules that
        # read that group: a URI or a header is not scanned with the hundreds of ARGS patterns.
        # The parameter-like collections share one group (their rules are nearly the same).
        memo: dict[tuple[tuple[str, ...], tuple[int, ...]], MultiMatcher] = {}
        self._pipes_for: dict[str, list[tuple[tuple[str, ...], MultiMatcher]]] = {}
        self._union_for: dict[str, MultiMatcher] = {}
        self._pids_memo: dict[tuple[str, int], frozenset[int]] = {}
        self._plan_for: dict[str, tuple[tuple[str, int], ...]] = {}
        self._inert_mask: dict[str, int] = {}
        self._inert_rest: dict[str, list[tuple[tuple[str, ...], MultiMatcher]]] = {}
        self._skip: frozenset[int] = frozenset()
        self._pipes_plan: dict[str, tuple[tuple[tuple[str, ...], MultiMatcher, int, bool], ...]] = {}
        self._special_for: dict[str, list[CrsRule]] = {}
        self._reads: dict[str, frozenset[int]] = {}
        for coll in SUPPORTED_COLLECTIONS:
            group = _ARGS_LIKE if coll in _ARGS_LIKE else (coll,)
            self._reads[coll] = frozenset(
                pid for pid, r in enumerate(self.rules) if any(_covers(t.collection, coll) for t in r.include)
            )
            group_pids = {
                pid
                for pid, r in enumerate(self.rules)
                if pid in patterns and any(_covers(t.collection, c) for t in r.include for c in group)
            }
            pipes: list[tuple[tuple[str, ...], MultiMatcher]] = []
            for pipe in sorted({self.rules[pid].pipeline for pid in group_pids if pid in self._reads[coll]}):
                pids = tuple(sorted(pid for pid in group_pids if self.rules[pid].pipeline == pipe))
                key = (pipe, pids)
                if key not in memo:
                    memo[key] = MultiMatcher([patterns[p] for p in pids], use_hyperscan=use_hyperscan)
                pipes.append((pipe, memo[key]))
            self._pipes_for[coll] = pipes
            if len(pipes) > 2:
                # All of the group's patterns in one more database: for the common value that most
                # pipelines leave unchanged, one scan replaces one scan per pipeline.
                all_pids = tuple(sorted(pid for pid in group_pids if self.rules[pid].pipeline in dict(pipes)))
                ukey = ((), all_pids)
                if ukey not in memo:
                    memo[ukey] = MultiMatcher([patterns[p] for p in all_pids], use_hyperscan=use_hyperscan)
                self._union_for[coll] = memo[ukey]
            self._special_for[coll] = [
                r for r in self.rules if r.special and any(_covers(t.collection, coll) for t in r.include)
            ]
        self._matchers = list(memo.values())
        for coll in self._pipes_for:
            self._plan(coll)
        self.stats.python_only = sum(m.python_only for m in self._matchers)
        self.stats.hyperscan = use_hyperscan and any(m._db is not None for m in self._matchers)
        self._cache: OrderedDict[tuple[str, str, str], tuple[CrsRule, ...]] = OrderedDict()
        self._applies_memo: dict[tuple[int, str, str], bool] = {}

    def _compile(
        self, sec: SecRule, attack: str, by_pipeline: dict[tuple[str, ...], list[Pattern]]
    ) -> CrsRule | None:
        score = SEVERITY_SCORE.get(sec.severity)
        if not sec.rule_id or score is None:
            return None  # flow control (skipAfter), set-up, or a non-scoring rule
        first = sec.links[0]
        targets = _normalise_targets(first.targets)
        include = [
            t for t in targets if not t.exclude and not t.count and t.collection in SUPPORTED_COLLECTIONS
        ]
        exclude = [t for t in targets if t.exclude]
        if not include:
            self.stats.skip("targets")
            return None
        if first.negated:
            self.stats.skip("negated operator")
            return None
        pipeline = pipeline_of(first.transforms)
        if pipeline is None:
            self.stats.skip("transformation")
            return None
        chain: list[ChainTest] = []
        context: list[ContextStep] = []
        for link in sec.links[1:]:
            if {t.collection for t in link.targets} - _CHAIN_SAME_VALUE:
                step = _context_step(link, first)
                if step is None:
                    self.stats.skip("chain on other variables")
                    return None
                context.append(step)
                continue
            rx = _link_regex(self.rule_dir, link)
            link_pipe = pipeline_of(link.transforms) if link.transforms else pipeline
            if rx is None or link_pipe is None:
                self.stats.skip("chain operator")
                return None
            try:
                chain.append(
                    ChainTest(link_pipe, compile_python(to_python_regex(rx[0]), rx[1]), link.negated)
                )
            except re.error:
                self.stats.skip("regex")
                return None
        if sec.rule_id in _SHELLSHOCK_RULES:
            attack = "shellshock"
        rule = CrsRule(
            sec.rule_id, attack, score, sec.paranoia_level, sec.msg, pipeline, include, exclude, chain
        )
        if context:
            rule.context = context
            if context[0].kind == "not_host":  # it reads the first link's own capture
                rx = _link_regex(self.rule_dir, first)
                if rx is None:
                    self.stats.skip("chain operator")
                    return None
                rule.capture = compile_python(to_python_regex(rx[0]), rx[1])
        if first.operator in _SPECIAL_OPS:
            if self._special is None:
                self.stats.skip("libinjection missing")
                return None
            rule.special = first.operator
            return rule
        pattern = _link_pattern(self.rule_dir, first, len(self.rules))
        if pattern is None:
            self.stats.skip(f"operator @{first.operator}")
            return None
        if not pattern.phrases:
            try:
                compile_python(to_python_regex(pattern.source), pattern.caseless)
            except re.error:
                self.stats.skip("regex")
                return None
        by_pipeline.setdefault(pipeline, []).append(pattern)
        return rule

    def _match_uncached(self, collection: str, key: str, value: str) -> tuple[CrsRule, ...]:
        out: list[CrsRule] = []
        reads = self._reads.get(collection, frozenset())
        union = self._union_for.get(collection)
        found: list[int] = []
        unchanged = 0  # bit i: pipeline i leaves the value as it is (the union database scans it)
        if union is not None and _INERT.match(value) is not None:
            # words and single spaces: only a few transformations can change such a value
            unchanged = self._inert_mask[collection]
            for pipe, matcher in self._inert_rest[collection]:
                found.extend(matcher.candidates(apply(pipe, value), reads))
        else:
            texts = [value]
            # A transformation is pure: the same function on the same text (most leave a value as it
            # is, normalisePath/normalizePath are one function) is computed once per value.
            done: dict[tuple[object, int], str] = {}
            for name, parent in self._plan_for.get(collection, ()):
                fn, src = TRANSFORMS[name], texts[parent]
                text = done.get((fn, id(src)))  # `texts` keeps every source alive: ids stay unique
                if text is None:
                    text = done[(fn, id(src))] = fn(src)
                texts.append(text)
            low = ""
            for i, (_pipe, matcher, node, caseless) in enumerate(self._pipes_plan.get(collection, ())):
                text = texts[node]
                # cmdLine pipelines match caselessly, so their lower-casing changes nothing
                if union is not None and (
                    text is value or text == value or (caseless and text == (low or (low := value.lower())))
                ):
                    unchanged |= 1 << i
                    continue
                found.extend(matcher.candidates(text, reads))
        if unchanged and union is not None:
            found.extend(union.candidates(value, self._pids_of(collection, unchanged)))
        for pid in found:
            rule = self.rules[pid]
            if (not rule.keyed or self._applies(rule, collection, key)) and (
                not rule.chain or rule.chain_ok(value)
            ):
                out.append(rule)
        if self._special is not None:
            for rule in self._special_for.get(collection, ()):
                if rule.rule_id in self._skip or not self._applies(rule, collection, key):
                    continue
                fn = self._special[0] if rule.special == "detectSQLi" else self._special[1]
                if fn(apply(rule.pipeline, value)):
                    out.append(rule)
        return tuple(out)

    def _applies(self, rule: CrsRule, collection: str, key: str) -> bool:
        """`rule.applies`, memoised: parameter and header names repeat across requests, and a rule's
        targets never change once loaded. Bounded: emptied when full, long names not stored."""
        if len(key) > _APPLIES_KEY_MAX:
            return rule.applies(collection, key)
        ak = (id(rule), collection, key)  # rules live as long as the rule set
        hit = self._applies_memo.get(ak)
        if hit is None:
            if len(self._applies_memo) >= _APPLIES_MAX:
                self._applies_memo.clear()
            hit = self._applies_memo[ak] = rule.applies(collection, key)
        return hit

    def _pids_of(self, collection: str, mask: int) -> frozenset[int]:
        """Rules of `collection` whose pipeline is one of those in bit `mask` (memoised)."""
        key = (collection, mask)
        pids = self._pids_memo.get(key)
        if pids is None:
            pipes = self._pipes_plan[collection]
            wanted = {pipes[i][0] for i in range(len(pipes)) if mask >> i & 1}
            reads = self._reads.get(collection, frozenset())
            pids = self._pids_memo[key] = frozenset(p for p in reads if self.rules[p].pipeline in wanted)
        return pids

    def _plan(self, collection: str) -> None:
        """Each pipeline's text computed once per value from its longest prefix (cmdLine,
        cmdLine+normalizePath… share their first steps): `_plan_for` lists (transform, parent node)."""
        nodes: dict[tuple[str, ...], int] = {(): 0}
        plan: list[tuple[str, int]] = []
        for pipe, _ in self._pipes_for[collection]:
            for cut in range(1, len(pipe) + 1):
                if pipe[:cut] not in nodes:
                    plan.append((pipe[cut - 1], nodes[pipe[: cut - 1]]))
                    nodes[pipe[:cut]] = len(plan)
        self._plan_for[collection] = tuple(plan)
        pipes = self._pipes_for[collection]
        self._inert_mask[collection] = sum(
            1 << i for i, (p, _) in enumerate(pipes) if _INERT_SAFE.issuperset(p)
        )
        self._inert_rest[collection] = [(p, m) for p, m in pipes if not _INERT_SAFE.issuperset(p)]
        self._pipes_plan[collection] = tuple(
            (pipe, m, nodes[pipe], "cmdLine" in pipe) for pipe, m in self._pipes_for[collection]
        )

    def skip(self, rule_ids: frozenset[int]) -> None:
        """Rules the caller will discard anyway: the libinjection ones among them are not run
        (the cache is cleared when the set changes, i.e. on a policy change)."""
        if rule_ids != self._skip:
            self._skip = rule_ids
            self._cache.clear()

    def match(self, collection: str, key: str, value: str) -> tuple[CrsRule, ...]:
        """Rules (of any paranoia level) that fire on one variable; cached for repeated values."""
        if len(value) > _CACHE_VALUE_MAX:
            return self._match_uncached(collection, key, value)
        ck = (collection, key, value)
        hit = self._cache.get(ck)
        if hit is None:
            hit = self._match_uncached(collection, key, value)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.popitem(last=False)
            self._cache[ck] = hit
        return hit
