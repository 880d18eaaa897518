"""Password-guessing throttle: per user name and per source address, back-off then lockout.

Each key (a user name, a source address) counts its recent failures. The first `free` failures cost
nothing; after that each attempt must wait an exponentially growing delay (1 s, 2 s, 4 s ... capped),
and at `lockout_after` failures the key is locked for `lockout_s`. While a key waits or is locked,
attempts are refused without checking the password (so a correct guess cannot be told from a wrong
one). A success clears the user's and the address's counts. In memory, per console process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


class Throttled(Exception):
    """Too many failed logins: retry after `retry_after` seconds (HTTP 401 + Retry-After)."""

    def __init__(self, retry_after: float, locked: bool) -> None:
        self.retry_after = max(1, int(retry_after + 0.999))
        self.locked = locked
        what = "temporarily locked after too many failed logins" if locked else "too many failed logins"
        super().__init__(f"{what}: retry in {self.retry_after} s")


@dataclass
class _Key:
    failures: int = 0
    wait_until: float = 0.0
    locked_until: float = 0.0
    last_failure: float = 0.0


@dataclass(frozen=True)
class ThrottlePolicy:
    free: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    lockout_after: int = 20
    lockout_s: float = 900.0
    forget_after_s: float = 900.0
    """failures older than this (with none since) are forgotten"""


def policy_from_env(text: str | None) -> ThrottlePolicy:
    """`GARRISON_LOGIN_THROTTLE="free=5,base=1,max=30,lockout_after=20,lockout_s=900"` (any subset)."""
    if not text:
        return ThrottlePolicy()
    names = {"free": "free", "base": "base_delay_s", "max": "max_delay_s",
             "lockout_after": "lockout_after", "lockout_s": "lockout_s", "forget_s": "forget_after_s"}  # fmt: skip
    values: dict[str, float | int] = {}
    for part in text.split(","):
        key, _, raw = part.strip().partition("=")
        if key not in names:
            raise ValueError(f"GARRISON_LOGIN_THROTTLE: unknown setting {key!r} (known: {', '.join(names)})")
        try:
            values[names[key]] = int(raw) if key in ("free", "lockout_after") else float(raw)
        except ValueError:
            raise ValueError(f"GARRISON_LOGIN_THROTTLE: {key}={raw!r} is not a number") from None
        if values[names[key]] < (1 if key == "lockout_after" else 0):
            raise ValueError(f"GARRISON_LOGIN_THROTTLE: {key} must not be below 1")
    return ThrottlePolicy(**values)  # type: ignore[arg-type]


class LoginThrottle:
    MAX_KEYS = 100_000

    def __init__(
        self, policy: ThrottlePolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or ThrottlePolicy()
        self.clock = clock
        self._keys: dict[str, _Key] = {}
        self._lock = threading.Lock()

    @staticmethod
    def keys(username: str, address: str) -> list[str]:
        return [f"user:{username.lower()[:128]}", f"addr:{address}"]

    def check(self, username: str, address: str) -> None:
        """Raise Throttled when this user or this address must wait."""
        now = self.clock()
        with self._lock:
            worst: tuple[float, bool] = (0.0, False)
            for k in self.keys(username, address):
                st = self._keys.get(k)
                if st is None:
                    continue
                if st.locked_until > now:
                    worst = max(worst, (st.locked_until - now, True))
                elif st.wait_until > now:
                    worst = max(worst, (st.wait_until - now, False))
        if worst[0] > 0:
            raise Throttled(*worst)

    def failed(self, username: str, address: str) -> list[str]:
        """Count a failure; returns the keys this failure locked (for the audit trail)."""
        p = self.policy
        now = self.clock()
        locked: list[str] = []
        with self._lock:
            if len(self._keys) >= self.MAX_KEYS:
                self._prune(now)
            for k in self.keys(username, address):
                st = self._keys.setdefault(k, _Key())
                if now - st.last_failure > p.forget_after_s and st.locked_until <= now:
                    st.failures = 0
                st.failures += 1
                st.last_failure = now
                if st.failures >= p.lockout_after:
                    if st.locked_until <= now:
                        locked.append(k)
                    st.locked_until = now + p.lockout_s
                    st.failures = p.free  # after the lockout, back-off resumes from the start
                elif st.failures > p.free:
                    delay = min(p.max_delay_s, p.base_delay_s * 2 ** (st.failures - p.free - 1))
                    st.wait_until = now + delay
        return locked

    def succeeded(self, username: str, address: str) -> None:
        with self._lock:
            for k in self.keys(username, address):
                self._keys.pop(k, None)

    def _prune(self, now: float) -> None:
        stale = [
            k
            for k, st in self._keys.items()
            if st.locked_until <= now and now - st.last_failure > self.policy.forget_after_s
        ]
        for k in stale:
            del self._keys[k]
        if len(self._keys) >= self.MAX_KEYS:  # under a flood of distinct keys: keep the newest half
            for k in sorted(self._keys, key=lambda k: self._keys[k].last_failure)[: self.MAX_KEYS // 2]:
                del self._keys[k]
