"""Many regular expressions matched against one value in one pass.

With Hyperscan (`hyperscan` on PyPI, the library bundled in its wheel) every pattern of a group is
compiled into one database in *prefilter* mode: Hyperscan answers "which patterns may match" in a
single scan, and only those few candidates are confirmed with Python's `re` (which has the PCRE
features Hyperscan lacks: look-around, back-references). Without Hyperscan every pattern runs
through `re` one after another — correct, several times slower.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("garrison.cnaf.crs")

_hs: Any
try:  # optional native accelerator
    import hyperscan as _hs
except ImportError:  # pragma: no cover - exercised only where the wheel is absent
    _hs = None

HYPERSCAN_AVAILABLE = _hs is not None


@dataclass(frozen=True, slots=True)
class Pattern:
    """A regex (PCRE, as written in the rule file) or, for phrase lists, the phrases themselves."""

    pid: int
    source: str
    caseless: bool
    phrases: tuple[str, ...] = ()


_LEADING_FLAGS = re.compile(r"^(\^?)\(\?([imsx]+)\)")


def to_python_regex(pcre: str) -> str:
    """The PCRE dialect CRS writes, in Python `re` syntax (`\\z`, a `(?i)` after `^`)."""
    src = pcre.replace("\\z", "\\Z")
    m = _LEADING_FLAGS.match(src)
    if m and m.group(1):
        src = f"(?{m.group(2)})^" + src[m.end() :]
    return src


def compile_python(source: str, caseless: bool) -> re.Pattern[str]:
    return re.compile(source, re.S | (re.I if caseless else 0))


def _literal_regex(phrases: tuple[str, ...]) -> str:
    return "(?:" + "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True)) + ")"


# PCRE features Hyperscan lacks (look-around, back-references, atomic groups, conditionals): such a
# pattern goes in prefilter mode and its hits are confirmed with `re`.
_NEEDS_PREFILTER = re.compile(r"\(\?<?[=!]|\(\?>|\(\?\(|\\[1-9]|\\[gk]|[*+?}]\+")


def _mode_for(source: str) -> int:
    assert _hs is not None
    return _hs.HS_FLAG_PREFILTER if _NEEDS_PREFILTER.search(source) else 0


def _cache_dir() -> Path | None:
    """A private directory for compiled databases: ~/.cache, else the temp dir (HOME may not exist
    for the user the defender runs as). Refused unless it is ours and closed to others, since a
    database file planted there would decide what the firewall matches."""
    home = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    candidates = [os.environ.get("GARRISON_CNAF_CACHE") or os.path.join(home, "garrison", "cnaf")]
    candidates.append(os.path.join(tempfile.gettempdir(), f"garrison-cnaf-{os.getuid()}"))
    for base in candidates:
        try:
            os.makedirs(base, mode=0o700, exist_ok=True)
            st = os.stat(base)
        except OSError:
            continue
        if st.st_uid == os.getuid() and not st.st_mode & 0o022:
            return Path(base)
    return None


def cache_stem(digest: str) -> Path | None:
    """Where a database compiled from expressions hashing to `digest` is kept (None: no cache)."""
    cache = _cache_dir()
    return cache / f"hs-{digest[:32]}" if cache else None


def read_cached(stem: Path | None) -> tuple[Any, dict[str, Any]] | None:
    """(database with its scratch, metadata) from the cache, or None when absent or unreadable."""
    assert _hs is not None
    if stem is None or not stem.with_suffix(".db").is_file():
        return None
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
        db = _hs.loadb(stem.with_suffix(".db").read_bytes(), _hs.HS_MODE_BLOCK)
    except Exception:
        log.info("CNAF: ignoring unreadable Hyperscan cache %s", stem)
        return None
    db.scratch = _hs.Scratch(db)
    return db, meta


def write_cached(stem: Path | None, db: Any, meta: dict[str, Any]) -> None:
    """Store a compiled database (atomically: a reader never sees half a file)."""
    assert _hs is not None
    if stem is None:
        return
    try:
        tmp = stem.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(_hs.dumpb(db))
        os.replace(tmp, stem.with_suffix(".db"))
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, stem.with_suffix(".json"))
    except OSError:
        pass


class MultiMatcher:
    """`candidates(text)` → ids of the patterns that match `text` (confirmed, exact).

    Hyperscan expressions: exact mode where Hyperscan supports the whole pattern (no confirmation
    needed), prefilter mode where it does not (confirmed with `re`), one expression per phrase of a
    phrase list (Hyperscan limits the length of one expression). Compiling the big CRS expressions
    takes tens of seconds, so the serialised database is cached on disk, keyed by a hash of every
    expression and flag (a changed rule file compiles anew).
    """

    def __init__(self, patterns: Sequence[Pattern], *, use_hyperscan: bool = True) -> None:
        self._python: dict[int, re.Pattern[str]] = {}
        self._py_source: dict[int, tuple[str, bool]] = {}
        self._confirm: set[int] = set()  # prefilter-mode ids: a Hyperscan hit must be confirmed
        self._always: list[int] = []  # patterns Hyperscan cannot take: always run in Python
        self._expr_owner: list[int] = []  # Hyperscan expression index → pattern id
        for p in patterns:
            src = _literal_regex(p.phrases) if p.phrases else to_python_regex(p.source)
            self._py_source[p.pid] = (src, p.caseless)
        self._db = None
        if use_hyperscan and _hs is not None and patterns:
            self._db = self._build(patterns)
        elif patterns:
            self._always = [p.pid for p in patterns]

    def _build(self, patterns: Sequence[Pattern]) -> Any:
        assert _hs is not None
        digest = hashlib.sha256(str(getattr(_hs, "__version__", "")).encode())
        for p in patterns:
            digest.update(repr((p.pid, p.source, p.caseless, p.phrases)).encode())
        stem = cache_stem(digest.hexdigest())
        cached = read_cached(stem)
        if cached is not None:
            db, meta = cached
            self._expr_owner = meta["owner"]
            self._confirm = set(meta["confirm"])
            self._always = meta["always"]
            return db
        db = self._compile(patterns)
        if db is not None:
            write_cached(
                stem,
                db,
                {"owner": self._expr_owner, "confirm": sorted(self._confirm), "always": self._always},
            )
        return db

    def _compile(self, patterns: Sequence[Pattern]) -> Any:
        """One database for all patterns: first with every regex in the mode its syntax suggests
        (one compile — the big CRS expressions take seconds each), and only if Hyperscan refuses
        that, pattern by pattern to find the ones that need prefilter mode or Python."""
        assert _hs is not None
        base = _hs.HS_FLAG_SINGLEMATCH | _hs.HS_FLAG_DOTALL | _hs.HS_FLAG_ALLOWEMPTY
        for careful in (False, True):
            exprs: list[bytes] = []
            flags: list[int] = []
            self._expr_owner, self._confirm, self._always = [], set(), []
            for p in patterns:
                case = _hs.HS_FLAG_CASELESS if p.caseless else 0
                if p.phrases:
                    for phrase in p.phrases:
                        exprs.append(re.escape(phrase).encode())
                        flags.append(base | case)
                        self._expr_owner.append(p.pid)
                    continue
                src = p.source.encode()
                modes = (0, _hs.HS_FLAG_PREFILTER) if careful else (_mode_for(p.source),)
                for extra in modes:
                    if careful:
                        try:
                            _hs.Database().compile(expressions=[src], ids=[0], flags=[base | case | extra])
                        except Exception:
                            continue
                    exprs.append(src)
                    flags.append(base | case | extra)
                    self._expr_owner.append(p.pid)
                    if extra:
                        self._confirm.add(p.pid)
                    break
                else:
                    self._always.append(p.pid)
            if not exprs:
                return None
            db = _hs.Database()
            try:
                db.compile(expressions=exprs, ids=list(range(len(exprs))), elements=len(exprs), flags=flags)
            except Exception:
                if careful:
                    raise
                continue
            return db
        return None

    @property
    def python_only(self) -> int:
        return len(self._always)

    def candidates(self, text: str, wanted: frozenset[int] | None = None) -> list[int]:
        """Ids of the patterns (of `wanted`, default all) that match `text`."""
        found: list[int] = []
        if self._db is not None:
            hits: set[int] = set()
            owner = self._expr_owner
            self._db.scan(
                text.encode("utf-8", "surrogatepass"),
                match_event_handler=lambda eid, _f, _t, _fl, _c: hits.add(owner[eid]),
            )
            if wanted is not None:
                hits &= wanted
            for pid in hits:
                if pid not in self._confirm or self._regex(pid).search(text):
                    found.append(pid)
        for pid in self._always:
            if (wanted is None or pid in wanted) and self._regex(pid).search(text):
                found.append(pid)
        return found

    def _regex(self, pid: int) -> re.Pattern[str]:
        """Python regexes are compiled on first use: most are never needed with Hyperscan."""
        rx = self._python.get(pid)
        if rx is None:
            rx = self._python[pid] = compile_python(*self._py_source[pid])
        return rx
