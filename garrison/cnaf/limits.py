"""Per-client state: token-bucket rate limits and the ban list, both bounded in memory."""

from __future__ import annotations

import time
from collections.abc import Callable

_MAX_CLIENTS = 100_000


class RateLimiter:
    """Two token buckets per client: `burst` tokens refilled over 1 s, and `average`/s over 60 s.

    The burst bucket absorbs short spikes; the 60-second bucket holds the sustained rate to
    `average` requests per second. A request must take a token from both.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # ip → [burst tokens, average tokens, last time]

    def allow(self, ip: str, burst: int, average: int) -> bool:
        now = self._clock()
        b = self._buckets.get(ip)
        cap_avg = float(average * 60)
        if b is None:
            if len(self._buckets) >= _MAX_CLIENTS:
                self._prune(now, burst, average)
            b = self._buckets[ip] = [float(burst), cap_avg, now]
        else:
            dt = now - b[2]
            b[0] = min(float(burst), b[0] + dt * burst)
            b[1] = min(cap_avg, b[1] + dt * average)
            b[2] = now
        if b[0] >= 1.0 and b[1] >= 1.0:
            b[0] -= 1.0
            b[1] -= 1.0
            return True
        return False

    def _prune(self, now: float, burst: int, average: int) -> None:
        # Buckets idle long enough to be full again carry no information.
        horizon = max(1.0, 60.0 * 1.0)
        for ip in [ip for ip, b in self._buckets.items() if now - b[2] > horizon]:
            del self._buckets[ip]
        if len(self._buckets) >= _MAX_CLIENTS:
            self._buckets.clear()


class BanList:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}

    def ban(self, ip: str, seconds: float) -> None:
        if len(self._until) >= _MAX_CLIENTS:
            now = self._clock()
            self._until = {k: v for k, v in self._until.items() if v > now}
        self._until[ip] = self._clock() + seconds

    def is_banned(self, ip: str) -> bool:
        until = self._until.get(ip)
        if until is None:
            return False
        if until <= self._clock():
            del self._until[ip]
            return False
        return True

    def __len__(self) -> int:
        return len(self._until)
