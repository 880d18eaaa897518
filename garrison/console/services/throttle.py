"""Password-guessing throttle: per user name and per source address, back-off then lockout.

Each key (a user name, a source address) counts its recent failures. The first `free` failures cost
nothing; after that each attempt must wait an exponentially growing delay (1 s, 2 s, 4 s ... capped),
and at `lockout_after` failures the key is locked for `lockout_s`. While a key waits or is locked,
attempts are refused without checking the password (so a correct guess cannot be told from a wrong
one), and an attempt made during the back-off takes the next slot before the password is checked, so
parallel guesses get one attempt per delay, not one each.

Shared by every console replica: the counts live in the store (`ThrottleStore`, atomic per key), so
N replicas behind a load balancer give an attacker the same attempts as one.

Attacker variants and what was chosen:
- user-name variants (`Admin`, fullwidth `admin`, trailing spaces) share one key: NFKC + casefold + strip;
- an IPv6 client owns a /64: addresses are keyed by their /64 (IPv4-mapped ones as IPv4);
- a success clears only the user's key, not the address's: an attacker who owns one account cannot
  reset their address's count between guesses at other accounts (it only gives back the slot it
  took, so the real users behind that address are not slowed further);
- the source address is the TCP peer; X-Forwarded-For is believed only from the proxies the
  operator lists in GARRISON_TRUSTED_PROXIES (see `client_address`), so a spoofed header cannot
  give each guess a fresh address;
- a lockout of a user can be used to keep the real user out for `lockout_s`: tokens already issued
  keep working, and `garrison console reset-admin` clears the admin's lockout.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from dataclasses import dataclass

from garrison.console.store.throttle import ThrottleRow, ThrottleStore


class Throttled(Exception):
    """Too many failed logins: retry after `retry_after` seconds (HTTP 401 + Retry-After)."""

    def __init__(self, retry_after: float, locked: bool) -> None:
        self.retry_after = max(1, int(retry_after + 0.999))
        self.locked = locked
        what = "temporarily locked after too many failed logins" if locked else "too many failed logins"
        super().__init__(f"{what}: retry in {self.retry_after} s")


@dataclass(frozen=True)
class ThrottlePolicy:
    free: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    lockout_after: int = 20
    lockout_s: float = 900.0
    forget_after_s: float = 900.0
    """failures older than this (with none since) are forgotten"""
    max_keys: int = 100_000
    """rows kept in the store at most (the least recently failed go first)"""

    def delay(self, failures: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * 2 ** (failures - self.free - 1))


def policy_from_env(text: str | None) -> ThrottlePolicy:
    """`GARRISON_LOGIN_THROTTLE="free=5,base=1,max=30,lockout_after=20,lockout_s=900"` (any subset)."""
    if not text:
        return ThrottlePolicy()
    names = {"free": "free", "base": "base_delay_s", "max": "max_delay_s",
             "lockout_after": "lockout_after", "lockout_s": "lockout_s", "forget_s": "forget_after_s",
             "max_keys": "max_keys"}  # fmt: skip
    values: dict[str, float | int] = {}
    for part in text.split(","):
        key, _, raw = part.strip().partition("=")
        if key not in names:
            raise ValueError(f"GARRISON_LOGIN_THROTTLE: unknown setting {key!r} (known: {', '.join(names)})")
        try:
            values[names[key]] = int(raw) if key in ("free", "lockout_after", "max_keys") else float(raw)
        except ValueError:
            raise ValueError(f"GARRISON_LOGIN_THROTTLE: {key}={raw!r} is not a number") from None
        if values[names[key]] < (1 if key in ("lockout_after", "max_keys") else 0):
            raise ValueError(f"GARRISON_LOGIN_THROTTLE: {key} must not be below 1")
    return ThrottlePolicy(**values)  # type: ignore[arg-type]


def user_key(username: str) -> str:
    return "user:" + unicodedata.normalize("NFKC", username).strip().casefold()[:128]


def address_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "addr:" + address[:128]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"addr:{ip.ipv4_mapped}"
        return f"addr:{ipaddress.ip_network((ip, 64), strict=False)}"
    return f"addr:{ip}"


class LoginThrottle:
    def __init__(self, store: ThrottleStore, policy: ThrottlePolicy | None = None) -> None:
        self.store = store
        self.policy = policy or ThrottlePolicy()

    @staticmethod
    def keys(username: str, address: str) -> list[str]:
        return [user_key(username), address_key(address)]

    def check(self, username: str, address: str) -> set[str]:
        """Raise Throttled when this user or this address must wait; during the back-off this
        attempt takes the slot (atomically across replicas) before the password is checked.
        Returns the keys on record (for `succeeded`)."""
        keys = self.keys(username, address)
        now, rows = self.store.read(keys)
        p = self.policy
        if not any(r.locked_until > now or r.wait_until > now or r.failures > p.free for r in rows.values()):
            return set(rows)

        def take_slot(rows: dict[str, ThrottleRow], now: float) -> tuple[float, bool]:
            worst = (0.0, False)
            for r in rows.values():
                if r.locked_until > now:
                    worst = max(worst, (r.locked_until - now, True))
                elif r.wait_until > now:
                    worst = max(worst, (r.wait_until - now, False))
            if worst[0] <= 0:
                for r in rows.values():
                    if r.failures > p.free and r.locked_until <= now:
                        r.wait_until = now + p.delay(r.failures)
            return worst

        worst = self.store.change(keys, take_slot, forget_s=p.forget_after_s, max_rows=p.max_keys)
        if worst[0] > 0:
            raise Throttled(*worst)
        return set(rows)

    def failed(self, username: str, address: str) -> list[str]:
        """Count a failure; returns the keys this failure locked (for the audit trail)."""
        p = self.policy

        def count(rows: dict[str, ThrottleRow], now: float) -> list[str]:
            locked: list[str] = []
            for k, st in rows.items():
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
                    st.wait_until = now + p.delay(st.failures)
            return sorted(locked)

        return self.store.change(self.keys(username, address), count, forget_s=p.forget_after_s, max_rows=p.max_keys)

    def succeeded(self, username: str, address: str, on_record: set[str]) -> None:
        """The password was right: the user's count is cleared; the address keeps its count (see
        the module docstring) but gives back the slot this attempt took."""
        user, addr = self.keys(username, address)
        if user in on_record:
            self.clear_user(username)
        if addr in on_record:

            def release(rows: dict[str, ThrottleRow], now: float) -> None:
                for r in rows.values():
                    r.wait_until = 0.0

            p = self.policy
            self.store.change([addr], release, forget_s=p.forget_after_s, max_rows=p.max_keys)

    def clear_user(self, username: str) -> None:
        """After a success (only the user's key: see the module docstring), or `reset-admin`."""
        self.store.clear([user_key(username)])
