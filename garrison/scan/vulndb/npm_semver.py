"""npm semver range evaluation (node-semver's semantics via the `node-semver` port).

Options are those `npm audit` uses (@npmcli/metavuln-calculator): loose parsing, and pre-releases
included, so `2.0.0-rc.1` is inside `>=1.0.0 <3.0.0`.
"""

from __future__ import annotations

from functools import lru_cache

from nodesemver import make_range, satisfies


@lru_cache(maxsize=65536)
def in_range(version: str, spec: str) -> bool:
    """True when `version` satisfies the npm range `spec`; False when either does not parse."""
    if not spec.strip():
        return False
    try:
        return bool(satisfies(version, spec, loose=True, include_prerelease=True))
    except (ValueError, TypeError, AttributeError):
        return False


@lru_cache(maxsize=8192)
def lower_bounds(spec: str) -> tuple[str, ...]:
    """The lowest version of each `||` alternative (`^4.8.4 || >=6.11.1` -> 4.8.4, 6.11.1): the
    versions that fix an advisory whose patched range is `spec`."""
    try:
        rng = make_range(spec, loose=True)
    except (ValueError, TypeError, AttributeError):
        return ()
    out: list[str] = []
    for comparators in rng.set:
        for c in comparators:
            if c.operator in (">=", "") and getattr(c.semver, "version", None):
                out.append(str(c.semver.version))
                break
    return tuple(out)
