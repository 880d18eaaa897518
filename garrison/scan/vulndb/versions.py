"""Each ecosystem's own version ordering, behind one `parse(ecosystem, text)` function.

OSV range events must be compared with the ecosystem's ordering (PEP 440 is not SemVer is not Maven is
not dpkg); a version that does not parse returns None so the caller can fall back to exact matching.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from debian.debian_support import Version as DebianVersion
from packaging.version import InvalidVersion
from packaging.version import Version as Pep440Version
from univers.versions import MavenVersion


def base_ecosystem(ecosystem: str) -> str:
    """`Debian:12` -> `Debian`; ecosystem names compare case-sensitively in OSV but we are lenient."""
    return ecosystem.split(":", 1)[0]


_SEMVER = re.compile(r"^[vV]?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def _semver(text: str) -> Any:
    """SemVer 2.0 precedence as a tuple key (lenient: `v` prefix, missing minor/patch = 0, Go's
    `+incompatible`); a release sorts after its pre-releases, numeric identifiers before alphanumeric."""
    m = _SEMVER.match(text.strip())
    if not m:
        return None
    core = (int(m[1]), int(m[2] or 0), int(m[3] or 0))
    if m[4] is None:
        return (*core, (1,))
    pre = tuple((0, int(i), "") if i.isdigit() else (1, 0, i) for i in m[4].split("."))
    return (*core, (0, pre))


def _pypi(text: str) -> Any:
    try:
        return Pep440Version(text)
    except InvalidVersion:
        return None


def _maven(text: str) -> Any:
    try:
        return MavenVersion(text)
    except Exception:
        return None


_GEM_VALID = re.compile(r"^\s*[0-9]+(?:\.[0-9a-zA-Z]+)*(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?\s*$")
_GEM_SEG = re.compile(r"[0-9]+|[a-z]+", re.IGNORECASE)


def _rubygems(text: str) -> Any:
    """Gem::Version ordering as a precomputed tuple (univers compares by re-parsing on every call,
    which dominated matching time): canonical segments, numbers above strings, padded with zeros."""
    if not _GEM_VALID.match(text):
        return None
    segs: list[int | str] = [
        int(x) if x.isdigit() else x for x in _GEM_SEG.findall(text.strip().replace("-", ".pre."))
    ]
    first_str = next((i for i, x in enumerate(segs) if isinstance(x, str)), len(segs))
    parts = [segs[:first_str], segs[first_str:]]
    canon: list[int | str] = []
    for part in parts:
        while part and part[-1] == 0:
            part.pop()
        canon.extend(part)
    key = [(1, x, "") if isinstance(x, int) else (0, 0, x) for x in canon]
    key += [(1, 0, "")] * max(0, 12 - len(key))
    return tuple(key)


def _debian(text: str) -> Any:
    try:
        return DebianVersion(text)
    except Exception:
        return None


_PARSERS = {
    "PyPI": _pypi,
    "npm": _semver,
    "Node.js": _semver,
    "Go": _semver,
    "crates.io": _semver,
    "Hex": _semver,
    "Packagist": _semver,
    "NuGet": _semver,
    "Maven": _maven,
    "RubyGems": _rubygems,
    "Debian": _debian,
    "Ubuntu": _debian,
}


@lru_cache(maxsize=65536)
def parse(ecosystem: str, text: str, range_type: str = "ECOSYSTEM") -> Any:
    """Parse `text` with the ordering for this ecosystem (or SemVer for OSV `SEMVER` ranges)."""
    if range_type == "SEMVER":
        return _semver(text)
    fn = _PARSERS.get(base_ecosystem(ecosystem), _pypi)
    return fn(text)
