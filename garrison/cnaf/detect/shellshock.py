"""Shellshock (CVE-2014-6271 and follow-ups): a bash function definition in a value."""

from __future__ import annotations

import re

from garrison.cnaf.fields import Field

_FUNC_DEF = re.compile(r"\(\s*\)\s*\{")


def detect(value: str, field: Field) -> str | None:
    if "()" not in value.replace(" ", "") or not _FUNC_DEF.search(value):
        return None
    stripped = value.lstrip()
    if stripped.startswith("(") or re.search(r"\(\s*\)\s*\{\s*[:\w][^}]*;\s*\}\s*;", value):
        return "bash function definition (Shellshock)"
    return None
