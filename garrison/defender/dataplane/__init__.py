"""The defender's data plane: which loop answers the app's trapped syscalls.

`native` (default where the extension is built): `_native.c` owns the seccomp notification loop in a
thread of its own and decides connect/sendto/sendmsg from tables compiled from the rule, without the
GIL; everything else is handed over to the Python handlers. `python`: the pure-Python listener
threads decide everything (kept for comparison and for hosts where the extension is missing).
Choose with `DEFENDER_DATAPLANE=native|python`.

Why the C source lives here and not in garrison/kernel/: the loop decides from policy tables, and
garrison/kernel/ holds mechanisms with no policy in them. The Python kernel wrappers stay the only
Python code speaking to the kernel; the C loop cannot call them without the GIL it exists to avoid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ENV = "DEFENDER_DATAPLANE"


def native_available() -> tuple[bool, str]:
    """(extension importable, why not)."""
    try:
        from garrison.defender.dataplane import _native  # type: ignore[attr-defined]  # noqa: F401
    except ImportError as exc:
        return False, f"native extension missing ({exc})"
    return True, ""


def choose(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """("native" | "python", the start-up line saying which one runs and why)."""
    want = (os.environ if env is None else env).get(ENV, "").strip().lower() or "native"
    if want == "python":
        return "python", f"data plane: python ({ENV}=python)"
    if want != "native":
        return "python", f"data plane: python ({ENV}={want!r} is not native|python)"
    ok, why = native_available()
    if not ok:
        return "python", f"data plane: python ({why})"
    return (
        "native",
        "data plane: native (C notification loop; connect/sendto/sendmsg, exec and fork decided from compiled tables)",
    )
