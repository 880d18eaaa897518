"""Accounts: brute-force throttling (issue 10 #3), the admin password on a failed first start and
`garrison console reset-admin` (#6), sessions revoked on password/role change (#9)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from garrison.console.services.client_address import client_address, trusted_proxies_from_env
from garrison.console.services.throttle import LoginThrottle, Throttled, ThrottlePolicy, policy_from_env
from garrison.console.store import throttle as throttle_store
from garrison.console.store.db import make_engine
from garrison.console.store.open import Store
from garrison.console.store.throttle import ThrottleStore
from tests.fixtures.console import RunningConsole


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


FULLWIDTH_ADMIN = "\uff41\uff44\uff4d\uff49\uff4e"


def _throttle(store: Store, clock: _Clock, **policy: float) -> LoginThrottle:
    return LoginThrottle(ThrottleStore(store.engine, clock), ThrottlePolicy(**policy))  # type: ignore[arg-type]


def test_throttle_backs_off_then_locks_per_user_and_per_address(store: Store) -> None:
    clock = _Clock()
    t = _throttle(store, clock, free=3, base_delay_s=1, max_delay_s=8, lockout_after=8, lockout_s=600)
    # Per user, from ever-changing addresses (a botnet guessing one account), under name variants.
    for i, name in enumerate(["admin", "Admin", " ADMIN "]):
        t.check(name, f"10.0.0.{i}")
        t.failed(name, f"10.0.0.{i}")
    t.check(FULLWIDTH_ADMIN, "10.0.1.1")  # three free failures (fullwidth: the same user after NFKC)
    t.failed(FULLWIDTH_ADMIN, "10.0.1.1")
    with pytest.raises(Throttled) as exc:
        t.check("admin", "10.0.1.2")
    assert exc.value.retry_after == 1 and not exc.value.locked
    t.check("someone-else", "10.0.1.3")  # other users are not affected
    delays = []
    for i in range(3):
        clock.now += 100
        t.failed("admin", f"10.0.2.{i}")
        with pytest.raises(Throttled) as exc:
            t.check("admin", "10.0.9.9")
        delays.append(exc.value.retry_after)
    assert delays == [2, 4, 8]  # exponential, capped
    clock.now += 100
    # During the back-off, an attempt takes the slot: a parallel second attempt waits.
    t.check("admin", "10.0.9.8")
    with pytest.raises(Throttled):
        t.check("admin", "10.0.9.7")
    assert t.failed("admin", "10.0.3.1") == ["user:admin"]  # the 8th failure locks the user
    with pytest.raises(Throttled) as exc:
        t.check("admin", "192.168.1.1")
    assert exc.value.locked and exc.value.retry_after == 600
    clock.now += 601
    t.check("admin", "192.168.1.1")
    # Per address, spraying many user names; an IPv6 attacker's whole /64 is one address.
    for i in range(4):
        t.failed(f"user{i}", f"2001:db8:1:2::{i + 1}")
    with pytest.raises(Throttled):
        t.check("fresh-user", "2001:db8:1:2:ffff::9")
    t.check("fresh-user", "2001:db8:1:3::1")  # the next /64 is someone else
    # A success clears the user's count only: owning one account does not reset the address, it
    # only gives back the slot its attempt took.
    clock.now += 100
    t.failed("owned", "2001:db8:1:2::1")
    clock.now += 100
    t.succeeded("owned", "2001:db8:1:2::1", t.check("owned", "2001:db8:1:2::1"))
    t.check("other", "2001:db8:1:2::1")  # the slot was given back: this attempt may go
    t.failed("other", "2001:db8:1:2::1")  # and a failure still backs off, from the count kept
    with pytest.raises(Throttled) as exc:
        t.check("another", "2001:db8:1:2::1")
    assert exc.value.retry_after == 4


def test_concurrent_failures_from_two_replicas_are_all_counted(store: Store) -> None:
    """Two stores on two engines (as two replicas have), 2 x 4 threads failing the same user at once:
    every failure counts (no lost update), and the lockout is reported exactly once."""
    engines = [store.engine, make_engine(store.engine.url.render_as_string(hide_password=False))]
    policy = {"free": 1000, "lockout_after": 80, "lockout_s": 600}
    throttles = [LoginThrottle(ThrottleStore(e), ThrottlePolicy(**policy)) for e in engines]  # type: ignore[arg-type]
    barrier = threading.Barrier(8)
    locked: list[str] = []

    def fail(t: LoginThrottle, n: int) -> None:
        barrier.wait()
        for i in range(10):
            locked.extend(t.failed("Victim", f"10.9.{n}.{i}"))

    threads = [threading.Thread(target=fail, args=(throttles[n % 2], n)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert locked == ["user:victim"]
    _, rows = store.throttle.read(["user:victim"])
    assert rows["user:victim"].locked_until > 0
    engines[1].dispose()


def test_throttle_table_is_bounded_under_a_flood_of_keys(store: Store) -> None:
    clock = _Clock()
    t = _throttle(store, clock, max_keys=50, forget_after_s=60, lockout_after=3, lockout_s=600)
    t.failed("admin", "10.0.0.1")
    t.failed("admin", "10.0.0.1")
    t.failed("admin", "10.0.0.1")  # locks admin: kept while other keys are evicted
    for i in range(300):  # many addresses and user names
        clock.now += 0.01
        t.failed(f"u{i}", f"10.1.{i // 250}.{i % 250}")
    assert store.throttle.count() <= 50 + 2 * throttle_store.PRUNE_EVERY
    t.store.prune(forget_s=60, max_rows=50)
    assert store.throttle.count() <= 50
    with pytest.raises(Throttled) as exc:
        t.check("admin", "10.2.0.1")
    assert exc.value.locked
    clock.now += 700  # everything expired: pruned to nothing
    t.store.prune(forget_s=60, max_rows=50)
    assert store.throttle.count() == 0


def test_client_address_believes_forwarded_for_only_from_trusted_proxies() -> None:
    proxies = trusted_proxies_from_env("10.0.0.0/24, 2001:db8::1")
    spoofed = ["1.2.3.4, 5.6.7.8"]
    assert client_address("203.0.113.9", spoofed, ()) == "203.0.113.9"  # none trusted: header ignored
    assert client_address("203.0.113.9", spoofed, proxies) == "203.0.113.9"  # peer is not a proxy
    # Through a trusted proxy: the rightmost hop that is not a trusted proxy (the client's own
    # entries to its left are whatever it wrote).
    assert client_address("10.0.0.5", ["6.6.6.6, 198.51.100.7"], proxies) == "198.51.100.7"
    assert client_address("10.0.0.5", ["6.6.6.6", "198.51.100.7, 10.0.0.4"], proxies) == "198.51.100.7"
    assert client_address("10.0.0.5", ["garbage"], proxies) == "10.0.0.5"
    assert client_address("10.0.0.5", [], proxies) == "10.0.0.5"
    with pytest.raises(ValueError, match="GARRISON_TRUSTED_PROXIES"):
        trusted_proxies_from_env("10.0.0.0/33")


def test_throttle_settings_from_env():
    assert policy_from_env("free=2,lockout_after=4,lockout_s=60,max_keys=10") == ThrottlePolicy(
        free=2, lockout_after=4, lockout_s=60.0, max_keys=10
    )
    with pytest.raises(ValueError, match="unknown setting"):
        policy_from_env("fee=1")


def _metric(c: RunningConsole, token: str, kind: str) -> float:
    text = httpx.get(
        c.url + "/metrics", verify=c.ssl_context(), headers={"authorization": f"Bearer {token}"}
    ).text
    m = re.search(rf'^garrison_login_failures_total{{kind="{kind}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_brute_force_is_throttled_locked_audited_and_counted(console_factory):
    c = console_factory(
        env={"GARRISON_LOGIN_THROTTLE": "free=5,base=0.2,max=0.4,lockout_after=9,lockout_s=600"}
    )
    with c.api() as api:
        token = api.post("/authenticate", json={"username": "admin", "password": c.admin_password}).json()[
            "token"
        ]
    statuses: list[int] = []
    retry_after: list[str] = []
    with httpx.Client(base_url=c.url + "/api/v1", verify=c.ssl_context()) as anon:
        for _ in range(7):
            r = anon.post("/authenticate", json={"username": "admin", "password": "wrong-guess"})
            statuses.append(r.status_code)
            retry_after.append(r.headers.get("retry-after", ""))
        # Throttled answers are 401 too (the credentials were not checked), with Retry-After.
        assert statuses == [401] * 7 and retry_after[:6] == [""] * 6, (statuses, retry_after)
        assert int(retry_after[6]) >= 1
        # While waiting, even the right password is refused: no oracle for a correct guess.
        r = anon.post("/authenticate", json={"username": "admin", "password": c.admin_password})
        assert r.status_code == 401 and "retry-after" in r.headers and "too many" in r.json()["detail"]
        # Basic auth on any route is throttled the same way.
        r = anon.get("/version", auth=("admin", c.admin_password))
        assert r.status_code == 401 and "retry-after" in r.headers
        # Keep failing (respecting the back-off) until the lockout.
        for _ in range(10):
            time.sleep(0.45)
            r = anon.post("/authenticate", json={"username": "admin", "password": "wrong-guess"})
            if "locked" in r.json()["detail"]:
                break
        assert r.status_code == 401 and "locked" in r.json()["detail"], r.text
        assert int(r.headers["retry-after"]) > 500
    with c.api(token=token) as api:  # an already issued token keeps working
        audits = api.get("/audits/mgmt", params={"limit": 100}).json()
    failed = [a for a in audits if a["action"] == "auth.login_failed"]
    assert len(failed) >= 9 and failed[0]["detail"]["address"] == "127.0.0.1"
    assert failed[0]["target"] == "admin"
    assert any(a["action"] == "auth.lockout" for a in audits)
    assert _metric(c, token, "failed") >= 9
    assert _metric(c, token, "throttled") >= 3
    assert _metric(c, token, "lockout") >= 1
    assert "failed login for 'admin' from 127.0.0.1" in c.log()


def test_failed_first_start_does_not_lose_the_admin_password(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "garrison",
                "console",
                "--data-dir",
                str(tmp_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--defender-port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        busy.close()
    assert r.returncode != 0 and "password:" not in r.stdout
    c = RunningConsole(tmp_path).start()  # the next start creates the admin and prints its password
    try:
        assert c.admin_password
        with c.api() as api:
            assert api.get("/version").status_code == 200
    finally:
        c.stop()


def _reset_admin(c: RunningConsole) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "garrison", "console", "reset-admin", "--data-dir", str(c.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return re.search(r"password: (\S+)", r.stdout).group(1)


def test_reset_admin_sets_a_new_password_and_revokes_tokens(console_factory, tmp_path):
    c = console_factory()
    with c.api() as api:
        session = api.post("/authenticate", json={"username": "admin", "password": c.admin_password}).json()
        # Even a deleted or demoted admin account is brought back as an admin.
        api.post("/users", json={"username": "boss", "password": "boss-password-1", "role": "admin"})
    with c.api("boss", "boss-password-1") as boss:
        assert boss.put("/users/admin", json={"role": "auditor"}).status_code == 200
    new = _reset_admin(c)
    assert new != c.admin_password
    with c.api(token=session["token"]) as api:
        assert api.get("/version").status_code == 401
    with c.api("admin", new) as api:
        assert api.get("/users").status_code == 200  # the admin role is back
        audits = api.get("/audits/mgmt").json()
    assert any(a["action"] == "user.reset_admin" and a["username"] == "local" for a in audits)
    r = subprocess.run(
        [sys.executable, "-m", "garrison", "console", "reset-admin", "--data-dir", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "not a console data directory" in r.stderr


def test_sessions_are_revoked_on_password_and_role_change(console_factory):
    c = console_factory()
    c.create_user("carol", "carol-password-1", "operator")

    def login(password: str) -> str:
        with c.api("carol", password) as api:
            return str(
                api.post("/authenticate", json={"username": "carol", "password": password}).json()["token"]
            )

    def works(token: str) -> bool:
        with c.api(token=token) as api:
            return api.get("/version").status_code == 200

    session = login("carol-password-1")
    with c.api("carol", "carol-password-1") as api:
        api_token = api.post("/tokens", json={"name": "ci", "ttl_days": 1}).json()["token"]
    with c.api() as admin:
        assert admin.put("/users/carol", json={"role": "auditor"}).status_code == 200
    assert not works(session)  # the UI session signed in under the old role is gone
    assert works(api_token)  # API tokens follow the new role at once
    with c.api(token=api_token) as api:
        assert api.put("/policies/runtime/app-embedded", json={"rules": []}).status_code == 403
    session = login("carol-password-1")
    with c.api() as admin:
        r = admin.put("/users/carol", json={"password": "carol-password-2"})
        assert r.status_code == 200
        audit = admin.get("/audits/mgmt", params={"username": "admin"}).json()[0]
    assert not works(session) and not works(api_token)  # a password change revokes every token
    assert audit["action"] == "user.update" and audit["detail"]["tokens_revoked"] == 2
    assert works(login("carol-password-2"))
