"""OWASP Core Rule Set detection for the CNAF, read from an installed CRS at start-up.

`ruleset()` loads once per process: the directory named by `GARRISON_CNAF_CRS_RULES`, else
Debian's `modsecurity-crs` (`/usr/share/modsecurity-crs/rules`). When neither exists the CNAF says
so once on stderr/log and runs its own detectors only.
"""

from __future__ import annotations

import logging
import sys
import threading

from garrison.cnaf.crs.data import DEFAULT_RULES_DIR, rules_dir
from garrison.cnaf.crs.ruleset import CrsRule, CrsRuleSet, RuleMatch
from garrison.cnaf.crs.tuning import DEFAULT_EXCLUDED_RULES

__all__ = [
    "DEFAULT_EXCLUDED_RULES",
    "DEFAULT_RULES_DIR",
    "CrsRule",
    "CrsRuleSet",
    "RuleMatch",
    "ruleset",
    "set_ruleset",
    "status",
]

log = logging.getLogger("garrison.cnaf.crs")
_UNSET = object()
_loaded: object = _UNSET
_status = "not loaded"
_lock = threading.Lock()
_loader: threading.Thread | None = None


def _say(message: str) -> None:
    log.warning(message)
    print(message, file=sys.stderr, flush=True)


def ruleset() -> CrsRuleSet | None:
    """The process-wide rule set (loaded on first call), or None when no CRS is installed."""
    with _lock:
        return _load_locked()


def start_loading() -> None:
    """Load in a background thread (the proxy opens its port at once; the first compile of the
    Hyperscan databases takes seconds to a minute, later starts read them from the cache)."""
    global _loader
    with _lock:
        if _loaded is not _UNSET or _loader is not None:
            return
        _loader = threading.Thread(target=ruleset, name="cnaf-crs-load", daemon=True)
        _loader.start()


def current() -> CrsRuleSet | None:
    """The rule set for inspecting a request now: while a background load runs, None (the CNAF's
    own detectors still inspect); without a background load, load now."""
    loaded = _loaded
    if isinstance(loaded, CrsRuleSet):  # the per-request case: no lock once loaded
        return loaded
    if _loader is not None and _loader.is_alive():
        return None
    return ruleset()


def _load_locked() -> CrsRuleSet | None:
    global _loaded, _status
    if _loaded is _UNSET:
        path = rules_dir()
        if path is None:
            _loaded, _status = None, "OWASP CRS disabled (GARRISON_CNAF_CRS_RULES=off)"
        elif not path.is_dir() or not any(path.glob("REQUEST-9*.conf")):
            _loaded = None
            _status = (
                f"CNAF: OWASP CRS rules not found in {path}: running Garrison's own detectors only "
                "(install the Debian package modsecurity-crs or set GARRISON_CNAF_CRS_RULES)"
            )
            _say(_status)
        else:
            try:
                rs = CrsRuleSet(path)
            except Exception as exc:
                _loaded = None
                _status = f"CNAF: could not load OWASP CRS from {path} ({exc}): own detectors only"
                _say(_status)
            else:
                _loaded = rs
                st = rs.stats
                _status = (
                    f"CNAF: OWASP CRS from {path}: {st.rules} rules in {st.files} files "
                    f"(skipped {sum(st.skipped.values())}), matcher "
                    f"{'Hyperscan' if st.hyperscan else 'Python re (slower: install hyperscan)'}, "
                    f"libinjection {'on' if st.libinjection else 'missing'}"
                )
                log.info(_status)
    return _loaded if isinstance(_loaded, CrsRuleSet) else None


def set_ruleset(rs: CrsRuleSet | None) -> None:
    """Replace the process-wide rule set (tests, or a reload)."""
    global _loaded, _status
    _loaded = rs
    _status = "set by caller" if rs is not None else "disabled by caller"


def status() -> str:
    return _status
