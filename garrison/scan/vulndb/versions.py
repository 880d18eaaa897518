"""Each ecosystem's own version ordering, behind one `parse(ecosystem, text)` function.

OSV range events must be compared with the ecosystem's ordering (PEP 440 is not SemVer is not Maven is
not dpkg); a version that does not parse returns None so the caller can fall back to exact matching.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from debian.debian_support import Version as DebianVersion
from packaging.version import InvalidVersion
from packaging.version import Version as Pep440Version
from univers.versions import MavenVersion, RubygemsVersion, SemverVersion


def base_ecosystem(ecosystem: str) -> str:
    """`Debian:12` -> `Debian`; ecosystem names compare case-sensitively in OSV but we are lenient."""
    return ecosystem.split(":", 1)[0]


def _semver(text: str) -> Any:
    t = text[1:] if text[:1] in ("v", "V") else text
    t = t.removesuffix("+incompatible")
    try:
        return SemverVersion(t)
    except Exception:
        # Go pseudo-versions and short forms ("1.2") are padded to three numeric parts.
        core, sep, rest = t.partition("-")
        nums = core.split(".")
        if all(n.isdigit() for n in nums) and 0 < len(nums) < 3:
            nums += ["0"] * (3 - len(nums))
            try:
                return SemverVersion(".".join(nums) + (sep + rest if sep else ""))
            except Exception:
                return None
        return None


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


def _rubygems(text: str) -> Any:
    try:
        return RubygemsVersion(text)
    except Exception:
        return None


def _debian(text: str) -> Any:
    try:
        return DebianVersion(text)
    except Exception:
        return None


_PARSERS = {
    "PyPI": _pypi,
    "npm": _semver,
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
