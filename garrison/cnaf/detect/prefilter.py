"""One Hyperscan pass per text tells which of the detectors' big regexes cannot match it.

The own detectors run dozens of large `re` alternations (command names, system files, script
sinks) on every value that passes their quick checks; on an ordinary URL-shaped value (a Referer)
that is ~45 µs of `re` for no finding. Here every such module-level pattern is compiled once into
one Hyperscan database in *prefilter* mode, which by Hyperscan's contract reports a superset of the
pattern's matches: a pattern it does not report for a text cannot match that text, so its `search`
returns None without running; a reported one runs in `re` as before. Results are therefore exactly
those of `re` — the detectors' code and patterns are unchanged, only their patterns are wrapped.

Hyperscan reads bytes with PCRE semantics, Python `re` reads str with Unicode semantics. They agree
on ASCII text except for `\\s` (Python also counts \\x1c-\\x1f as space, Hyperscan not \\x0b in all
versions): texts that are not ASCII or hold those characters skip the gate and run `re` directly.
Patterns with syntax the two read differently (`{,n}`, POSIX-like `[:`, numbered escapes,
verbose mode) or that Hyperscan refuses are left alone.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

from garrison.cnaf.crs import matcher

log = logging.getLogger("garrison.cnaf.detect")

_hs: Any = matcher._hs
# Only the big alternations are worth a slot: a short pattern costs `re` less than it adds to the
# scan. The detectors' own quick pre-checks (`_QUICK`) match most values that reach them: gating
# them would only add scan work.
_MIN_SOURCE = 120
_NOT_GATED_NAME = "_QUICK"
_FLAGS_OK = re.IGNORECASE | re.DOTALL | re.MULTILINE | re.UNICODE | re.ASCII
# Syntax Python and PCRE read differently: `{,n}` (PCRE: literal), `[:alpha:]`-like sets, `\\1`
# back-references / octal escapes, `\\N{…}`, `\\u`; such patterns are not gated.
_UNSAFE_SYNTAX = re.compile(r"\{,|\[[:=.]|\\[0-9NuU]")
# Texts where Python's `\s` differs from Hyperscan's: run `re` on them.
_ODD_SPACE = re.compile(r"[\x0b\x1c-\x1f]")
_MEMO_MAX = 256
_ALL: frozenset[int] = frozenset({-1})  # sentinel (by identity): text not gated, every pattern may match


class PrefilteredPattern:
    """A compiled `re` pattern whose `search`/`match`/`fullmatch`/`findall`/`sub` first ask the
    shared prefilter scan; everything else is the wrapped pattern's own."""

    __slots__ = ("_gate", "_id", "_rx")

    def __init__(self, rx: re.Pattern[str], pid: int, gate: PrefilterGate) -> None:
        self._rx, self._id, self._gate = rx, pid, gate

    def search(self, string: str, *args: int) -> re.Match[str] | None:
        if not args and not self._gate.may_match(self._id, string):
            return None
        return self._rx.search(string, *args)

    def match(self, string: str, *args: int) -> re.Match[str] | None:
        if not args and not self._gate.may_match(self._id, string):
            return None
        return self._rx.match(string, *args)

    def fullmatch(self, string: str, *args: int) -> re.Match[str] | None:
        if not args and not self._gate.may_match(self._id, string):
            return None
        return self._rx.fullmatch(string, *args)

    def findall(self, string: str, *args: int) -> list[Any]:
        if not args and not self._gate.may_match(self._id, string):
            return []
        return self._rx.findall(string, *args)

    def finditer(self, string: str, *args: int) -> Iterator[re.Match[str]]:
        if not args and not self._gate.may_match(self._id, string):
            return iter(())
        return self._rx.finditer(string, *args)

    def sub(self, repl: Any, string: str, count: int = 0) -> str:
        if not self._gate.may_match(self._id, string):
            return string
        return self._rx.sub(repl, string, count)

    def __getattr__(self, name: str) -> Any:  # pattern, flags, groups, subn, split…
        return getattr(self._rx, name)

    def __repr__(self) -> str:
        return f"PrefilteredPattern({self._rx!r})"


class PrefilterGate:
    """The database of all wrapped patterns, and a small memo text → ids Hyperscan reported."""

    def __init__(self) -> None:
        self._patterns: list[re.Pattern[str]] = []
        self._db: Any = None
        self._refused: frozenset[int] = frozenset()
        self._memo: dict[str, frozenset[int]] = {}
        self._local = threading.local()

    @property
    def active(self) -> bool:
        return self._db is not None

    def wrap(self, rx: Any, name: str = "") -> Any:
        """`rx` wrapped if it is a pattern worth and safe to gate, else `rx` itself."""
        if not isinstance(rx, re.Pattern) or name == _NOT_GATED_NAME or not _gateable(rx):
            return rx
        self._patterns.append(rx)
        return PrefilteredPattern(rx, len(self._patterns) - 1, self)

    def wrap_modules(self, modules: Iterable[ModuleType]) -> None:
        """Wrap the module-level patterns of `modules`, also those in module-level tuples of rules
        (`(pattern, reason, …)`), in place. Idempotent: wrapped patterns are not wrapped again."""
        for module in modules:
            for name, value in list(vars(module).items()):
                if isinstance(value, re.Pattern):
                    setattr(module, name, self.wrap(value, name))
                elif isinstance(value, tuple) and value and all(isinstance(v, tuple) for v in value):
                    setattr(module, name, tuple(tuple(self.wrap(x) for x in row) for row in value))

    def build(self) -> None:
        """Compile (or read from the on-disk cache) the database; until then every pattern runs in
        `re` as if not wrapped. Patterns Hyperscan refuses stay ungated."""
        if _hs is None or not self._patterns or self._db is not None:
            return
        exprs, flags = [], []
        for rx in self._patterns:
            exprs.append(rx.pattern.encode("utf-8"))
            flags.append(_hs_flags(rx))
        digest = hashlib.sha256(f"prefilter {getattr(_hs, '__version__', '')}".encode())
        for e, f in zip(exprs, flags, strict=True):
            digest.update(repr((e, f)).encode())
        stem = matcher.cache_stem(digest.hexdigest())
        cached = matcher.read_cached(stem)
        if cached is not None:
            db, meta = cached
            self._finish(db, set(meta["refused"]))
            return
        refused: set[int] = set()
        for i, (e, f) in enumerate(zip(exprs, flags, strict=True)):
            try:
                _hs.Database().compile(expressions=[e], ids=[0], flags=[f])
            except Exception:
                refused.add(i)
        ids = [i for i in range(len(exprs)) if i not in refused]
        if not ids:
            return
        db = _hs.Database()
        db.compile(
            expressions=[exprs[i] for i in ids], ids=ids, elements=len(ids), flags=[flags[i] for i in ids]
        )
        matcher.write_cached(stem, db, {"refused": sorted(refused)})
        self._finish(db, refused)

    def _finish(self, db: Any, refused: set[int]) -> None:
        self._refused = frozenset(refused)
        self._memo.clear()
        self._db = db
        log.info("CNAF: %d detector patterns prefiltered by Hyperscan", len(self._patterns) - len(refused))

    def may_match(self, pid: int, text: str) -> bool:
        """False only if pattern `pid` cannot match `text` (Hyperscan's prefilter did not report it)."""
        db = self._db
        if db is None or pid in self._refused:
            return True
        hits = self._memo.get(text)
        if hits is None:
            hits = self._scan(db, text)
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[text] = hits
        return hits is _ALL or pid in hits

    def _scan(self, db: Any, text: str) -> frozenset[int]:
        if not text.isascii() or _ODD_SPACE.search(text):
            return _ALL
        scratch = getattr(self._local, "scratch", None)
        if scratch is None or self._local.db is not db:
            scratch = self._local.scratch = _hs.Scratch(db)  # one per thread: a scan is not reentrant
            self._local.db = db
        hits: set[int] = set()
        db.scan(text.encode("ascii"), match_event_handler=lambda eid, *_: hits.add(eid), scratch=scratch)
        return frozenset(hits)


def _gateable(rx: re.Pattern[str]) -> bool:
    src = rx.pattern
    return (
        isinstance(src, str)
        and len(src) >= _MIN_SOURCE
        and not rx.flags & ~_FLAGS_OK
        and _UNSAFE_SYNTAX.search(src) is None
    )


def _hs_flags(rx: re.Pattern[str]) -> int:
    flags = _hs.HS_FLAG_PREFILTER | _hs.HS_FLAG_SINGLEMATCH
    if rx.flags & re.IGNORECASE:
        flags |= _hs.HS_FLAG_CASELESS
    if rx.flags & re.DOTALL:
        flags |= _hs.HS_FLAG_DOTALL
    if rx.flags & re.MULTILINE:
        flags |= _hs.HS_FLAG_MULTILINE
    if not rx.pattern.isascii():
        flags |= _hs.HS_FLAG_UTF8
    return flags


GATE = PrefilterGate()
