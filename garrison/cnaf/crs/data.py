"""Phrase lists of the installed CRS (`*.data`, what `@pmFromFile` reads), for the CNAF's own detectors.

The lists stay in the CRS package on disk; Garrison reads them at first use and keeps nothing of
them in the repository. Without an installed CRS a list is empty and the detectors that use it fall
back to their own patterns.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

DEFAULT_RULES_DIR = Path("/usr/share/modsecurity-crs/rules")


def rules_dir() -> Path | None:
    """`GARRISON_CNAF_CRS_RULES` (`off` disables), else Debian's `modsecurity-crs` directory."""
    env = os.environ.get("GARRISON_CNAF_CRS_RULES")
    if env is not None:
        return Path(env) if env and env.lower() not in ("0", "off", "none") else None
    return DEFAULT_RULES_DIR


@lru_cache(maxsize=16)
def phrases(name: str) -> frozenset[str]:
    """The lower-cased phrases of one CRS data file (comments and blank lines dropped), or empty."""
    base = rules_dir()
    if base is None:
        return frozenset()
    try:
        text = (base / name).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    return frozenset(
        line.strip().lower()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
