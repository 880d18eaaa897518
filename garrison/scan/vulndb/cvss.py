"""CVSS base scores from vector strings (v2, v3.0, v3.1, v4.0) with the `cvss` library (RedHat).

Advisories ship vectors more often than scores (OSV `severity[]`, the Node.js WG `cvss_vector`), and
some write them without the `CVSS:` prefix (`3.0/AV:N/...` in Node.js core advisories): both are
accepted; anything that does not parse gives None, never an exception.
"""

from __future__ import annotations

import re

from cvss import CVSS2, CVSS3, CVSS4
from cvss.exceptions import CVSSError

_BARE_V3 = re.compile(r"^3\.[01]/")


def normalise_vector(vector: str) -> str:
    """`3.0/AV:N/...` -> `CVSS:3.0/AV:N/...`; other forms unchanged (stripped)."""
    v = vector.strip()
    if _BARE_V3.match(v):
        return "CVSS:" + v
    return v


def base_score(vector: str) -> float | None:
    """Base score of a CVSS v2/v3.x/v4.0 vector, or None when it is not a valid vector."""
    v = normalise_vector(vector)
    try:
        if v.startswith("CVSS:4"):
            return float(CVSS4(v).base_score)
        if v.startswith("CVSS:3"):
            return float(CVSS3(v).base_score)
        if v.startswith("AV:") or v.startswith("(AV:"):
            return float(CVSS2(v.strip("()")).base_score)
    except (CVSSError, ValueError, KeyError, TypeError):
        return None
    return None
