"""Per-defender budgets for messages whose loss heals (learning reports): a defender that floods them
is refused with a clear error instead of making the console parse and store all of it.

Two token buckets per key, refilled continuously: `count` messages and `size` bytes per `period`
seconds, each holding at most one period's worth (the burst). Bounded in memory: keys idle long
enough to be full again carry no information and are dropped first."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_KEYS = 100_000


@dataclass(frozen=True)
class Limits:
    count: int = 600
    """messages per period per defender (a cell with 250 learning containers sends ~250 a minute)"""
    size: int = 64 * 1024 * 1024
    """bytes per period per defender"""
    period: float = 60.0

    def describe(self) -> str:
        return f"{self.count} reports and {self.size // (1024 * 1024)} MiB per {self.period:g} s"


def limits_from_env(text: str | None) -> Limits:
    """`GARRISON_PROFILE_LIMITS="REPORTS,MIB"` (per minute); unset: the defaults."""
    if not text:
        return Limits()
    try:
        count, mib = (int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"GARRISON_PROFILE_LIMITS={text!r}: expected REPORTS,MIB (per minute)") from None
    if count < 1 or mib < 1:
        raise ValueError(f"GARRISON_PROFILE_LIMITS={text!r}: both must be at least 1")
    return Limits(count=count, size=mib * 1024 * 1024)


class PerKeyBudget:
    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # key -> [messages left, bytes left, last refill]

    def take(self, key: str, nbytes: int) -> str:
        """"" when the message fits the key's budget (and is charged), else what it exceeds:
        "rate" (messages) or "bytes"."""
        lim, now = self.limits, self._clock()
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= MAX_KEYS:
                self._prune(now)
            b = self._buckets[key] = [float(lim.count), float(lim.size), now]
        else:
            dt = now - b[2]
            b[0] = min(float(lim.count), b[0] + dt * lim.count / lim.period)
            b[1] = min(float(lim.size), b[1] + dt * lim.size / lim.period)
            b[2] = now
        if b[0] < 1.0:
            return "rate"
        if b[1] < nbytes:
            return "bytes"
        b[0] -= 1.0
        b[1] -= nbytes
        return ""

    def _prune(self, now: float) -> None:
        period = self.limits.period
        for key in [k for k, b in self._buckets.items() if now - b[2] > period]:
            del self._buckets[key]
        if len(self._buckets) >= MAX_KEYS:
            self._buckets.clear()
