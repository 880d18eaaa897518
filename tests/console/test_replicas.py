"""Two real console replicas (`garrison console` processes) on one real PostgreSQL database.

Defenders are real channel clients (garrison.channel.simulate), connected either straight to one
replica or through a real TCP load balancer (tests/fixtures/tcp_balancer.py) in front of both.
Replicas share the CA through GARRISON_CONSOLE_CA_CERT/KEY, as a Cloud Foundry deployment does.
Policy polling is off in the console, so a change reaching the other replica's defenders proves
the LISTEN/NOTIFY path (or its catch-up after a reconnect); likewise the live audit stream's
backstop read is set to an hour, so an audit reaching another replica's stream proves
`NOTIFY garrison_audits`. No timing asserts: every wait is a generous deadline.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from garrison.channel.bundle import decode_bundle
from garrison.channel.simulate import SimulatedFleet
from garrison.policy.audit import AuditEvent
from tests.fixtures.console import RunningConsole, fresh_pg_database
from tests.fixtures.tcp_balancer import TcpBalancer
from tests.polling import until

T = TypeVar("T")
pytestmark = pytest.mark.slow
LEASE_S = "3"  # replicas renew every second; an expired lease is reaped within a few seconds
THROTTLE = "free=3,base=0.2,max=0.4,lockout_after=6,lockout_s=600"
WAIT_S = 90.0


def _wait(cond: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    return until(cond, timeout, what, interval=0.1)


class Fleet:
    """A SimulatedFleet run on its own event loop thread, driven from the (synchronous) test."""

    def __init__(self, bundle: str, folder: Path, n: int, prefix: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.commands: list[tuple[str, dict[str, Any]]] = []

        async def build() -> SimulatedFleet:
            return SimulatedFleet(decode_bundle(bundle), folder, n, prefix=prefix, heartbeat_interval=2.0)

        self.fleet = self.run(build())
        for client in self.fleet.clients:
            client.backoff_max = 2.0  # reconnect quickly after a replica dies
            client.on_command = self._on_command(client.hello.defender_id)

    def _on_command(self, who: str) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
        def answer(name: str, args: dict[str, Any]) -> dict[str, Any]:
            self.commands.append((name, args))
            return {"records": [{"kind": "exec", "pid": 1, "ppid": 0, "exe": "/bin/sh", "from": who}]}

        return answer

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT_S * 2) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> Fleet:
        self.run(self.fleet.start(timeout=WAIT_S))
        return self

    def ids(self) -> list[str]:
        return [c.defender_id for c in self.fleet.clients]

    def has_revision(self, revision: int) -> bool:
        return all(revision in r for r in self.fleet.received)

    def submit(self, i: int, events: list[AuditEvent]) -> None:
        self.loop.call_soon_threadsafe(self.fleet.submit, i, events)

    def stop(self) -> None:
        self.run(self.fleet.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Pair:
    """Replicas A and B on one fresh database; B gets A's CA through the environment."""

    def __init__(self, base: Path, db_url: str) -> None:
        self.base, self.db_url = base, db_url
        env = {
            "GARRISON_REPLICA_LEASE": LEASE_S,
            "GARRISON_LOGIN_THROTTLE": THROTTLE,
            "GARRISON_LIVE_BACKSTOP_S": "3600",
        }
        self.a = RunningConsole(base / "a", db_url=db_url, env=env).start()
        ca_env = {
            "GARRISON_CONSOLE_CA_CERT": (self.a.data_dir / "ca.pem").read_text(),
            "GARRISON_CONSOLE_CA_KEY": (self.a.data_dir / "ca-key.pem").read_text(),
        }
        self.b = RunningConsole(base / "b", db_url=db_url, env={**env, **ca_env}).start()
        self.b.admin_password = self.a.admin_password  # the admin exists once, in the shared database
        self.fleets: list[Fleet] = []

    def fleet(self, via: str | None, n: int, prefix: str) -> Fleet:
        """`via` None: the bundle A gives without `consoleaddr` (A first, the other replicas after)."""
        bundle = self.a.install_bundle(consoleaddr=via)
        f = Fleet(bundle, self.base / f"fleet-{prefix}", n, prefix)
        self.fleets.append(f)
        return f.start()

    def defenders(self, console: RunningConsole | None = None) -> dict[str, dict[str, Any]]:
        with (console or self.b).api() as c:
            r = c.get("/defenders", params={"limit": 1000})
            r.raise_for_status()
            return {d["id"]: d for d in r.json()}

    def replica_id(self, console: RunningConsole) -> str:
        with console.api() as c:
            return str(c.get("/cluster/replicas").json()["replica_id"])

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        dsn = make_url(self.db_url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as conn:
            return list(conn.execute(query, args).fetchall())

    def close(self) -> None:
        for f in self.fleets:
            f.stop()
        self.a.stop()
        self.b.stop()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    base_url = os.environ.get("GARRISON_TEST_PG_URL")
    if not base_url:
        pytest.skip("GARRISON_TEST_PG_URL is not set (scripts/test starts a PostgreSQL cluster and sets it)")
    db_url, drop = fresh_pg_database(base_url)
    p = Pair(tmp_path, db_url)
    try:
        yield p
    finally:
        p.close()
        drop()


def _addr(console: RunningConsole) -> str:
    return f"127.0.0.1:{console.defender_port}"


def _policy(name: str) -> dict[str, Any]:
    return {"rules": [{"name": name, "scope": {"apps": ["*"]}, "processes": {"effect": "alert"}}]}


def test_changes_on_one_replica_reach_the_other_replicas_defenders(pair: Pair) -> None:
    on_a = pair.fleet(_addr(pair.a), 3, "on-a")
    on_b = pair.fleet(_addr(pair.b), 3, "on-b")
    held = pair.defenders()
    ra, rb = pair.replica_id(pair.a), pair.replica_id(pair.b)
    assert {held[d]["replica_id"] for d in on_a.ids()} == {ra}
    assert {held[d]["replica_id"] for d in on_b.ids()} == {rb}
    with pair.a.api() as c:
        replicas = c.get("/cluster/replicas").json()
    assert replicas["listening"] and {r["id"] for r in replicas["replicas"]} == {ra, rb}

    # runtime policy: a PUT on A reaches B's defenders, a PUT on B reaches A's
    rev = pair.a.put_policy(_policy("from-a"))["revision"]
    _wait(lambda: on_b.has_revision(rev) and on_a.has_revision(rev), f"revision {rev} everywhere")
    rev = pair.b.put_policy(_policy("from-b"))["revision"]
    _wait(lambda: on_a.has_revision(rev) and on_b.has_revision(rev), f"revision {rev} everywhere")
    with pair.b.api() as c:
        assert f"garrison_policy_revision {rev}.0" in c.get(pair.b.url + "/metrics").text

    # alert settings saved on A are used by B for the events its defenders send
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(WAIT_S)
    try:
        settings = {"min_severity": "high", "syslog": {"host": "127.0.0.1", "port": udp.getsockname()[1]}}
        with pair.a.api() as c:
            assert c.put("/settings/alerts", json=settings).status_code == 200
        marker = uuid.uuid4().hex

        def sent() -> bool:  # B may act on the change after this event: keep sending until one arrives
            on_b.submit(
                0, [AuditEvent(type="process", effect="prevent", severity="critical", message=marker)]
            )
            return True

        sent()
        udp.settimeout(2.0)
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                if marker.encode() in udp.recv(65535):
                    break
            except TimeoutError:
                assert time.monotonic() < deadline, "B never sent an alert to the syslog output saved on A"
                sent()
    finally:
        udp.close()

    # a password changed on A: B forgets the password it verified (Basic auth) at once
    pair.a.create_user("ops", "first-Passw0rd!", "operator")
    with pair.b.api("ops", "first-Passw0rd!") as c:
        assert c.get("/defenders/summary").status_code == 200
    with pair.a.api() as c:
        assert c.put("/users/ops", json={"password": "second-Passw0rd!"}).status_code == 200
    with pair.b.api("ops", "first-Passw0rd!") as c:
        _wait(lambda: c.get("/defenders/summary").status_code == 401, "B refusing the old password")

    # forensics asked on A for a defender connected to B: routed to B, answered by the defender
    target = on_b.ids()[1]
    with pair.a.api() as c:
        r = c.get(f"/defenders/{target}/forensics", params={"max_bytes": 4096})
    assert r.status_code == 200, r.text
    assert r.json()["records"][0]["from"] == "on-b-1"
    assert ("upload_forensics", {"max_bytes": 4096}) in on_b.commands

    # a defender removed on A loses its connection to B
    victim = on_b.fleet.clients[2]
    with pair.a.api() as c:
        assert c.delete(f"/defenders/{victim.defender_id}").status_code == 204
    _wait(lambda: victim.revoked, "B closing the revoked defender's connection")
    with pair.a.api() as c:  # and it is not reachable any more, from either replica
        assert c.get(f"/defenders/{victim.defender_id}/forensics").status_code == 404


def test_listener_reconnects_and_catches_up(pair: Pair) -> None:
    on_a = pair.fleet(_addr(pair.a), 2, "la")
    killed = pair.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s",
        "garrison-listener%",
    )
    assert len(killed) == 2  # both replicas' listeners
    # stored while A's listener is (very likely) down: A finds it by comparing versions on reconnect
    rev = pair.b.put_policy(_policy("while-away"))["revision"]
    _wait(lambda: on_a.has_revision(rev), "the change made while A's listener was away")
    with pair.a.api() as c:
        metrics = c.get(pair.a.url + "/metrics").text
        assert "garrison_cluster_listener_reconnects 0.0" not in metrics
        _wait(lambda: c.get("/cluster/replicas").json()["listening"], "A listening again")


def _kill(console: RunningConsole) -> None:
    """SIGKILL: no shutdown path runs (connections, lease and spooled state as after a crash)."""
    assert console.proc is not None
    console.proc.send_signal(signal.SIGKILL)
    console.proc.wait(10)
    console.proc = None


def _ingest_across(
    pair: Pair, fleet: Fleet, per_defender: int, *, midway: int, action: Callable[[], None]
) -> set[tuple[str, str]]:
    """Every defender of `fleet` sends `per_defender` events in chunks of 250; once `midway` each are
    queued and some are stored, `action()` strikes mid-ingest. Returns the (defender, event) keys
    sent, after every spool is empty (all acknowledged)."""
    ids = fleet.ids()
    expected: set[tuple[str, str]] = set()
    for chunk in range(0, per_defender, 250):
        for i, defender_id in enumerate(ids):
            events = [
                AuditEvent(id=f"{defender_id}-{k:05d}", type="network", effect="alert", dest_port=k)
                for k in range(chunk, chunk + 250)
            ]
            expected.update((defender_id, e.id) for e in events)
            fleet.submit(i, events)
        if chunk == midway:
            _wait(lambda: pair.sql("SELECT count(*) FROM events")[0][0] > 0, "some events stored")
            action()
    fleet.run(fleet.fleet.wait_delivered(WAIT_S * 2))
    return expected


def test_replica_killed_mid_ingest_loses_nothing(pair: Pair) -> None:
    n, per_defender = 8, 3000
    with TcpBalancer([("127.0.0.1", pair.a.defender_port), ("127.0.0.1", pair.b.defender_port)]) as lb:
        fleet = pair.fleet(f"127.0.0.1:{lb.port}", n, "ingest")
        ra, rb = pair.replica_id(pair.a), pair.replica_id(pair.b)
        on_a = [d for d, row in pair.defenders().items() if row["replica_id"] == ra]
        assert on_a, "the balancer sent no defender to A"
        ids = fleet.ids()
        expected = _ingest_across(pair, fleet, per_defender, midway=1000, action=lambda: _kill(pair.a))

        rows = pair.sql("SELECT defender_id, event_id FROM events")
        assert len(rows) == len(expected)  # exactly once: nothing lost, nothing twice
        assert set(rows) == expected
        # every defender now connected through B; nothing left "connected" on the dead replica
        _wait(
            lambda: all(
                row["connected"] and row["replica_id"] == rb
                for d, row in pair.defenders().items()
                if d in ids
            ),
            "all defenders connected to B",
        )
        assert pair.sql("SELECT count(*) FROM defenders WHERE connected AND replica_id = %s", ra) == [(0,)]
        _wait(
            lambda: pair.sql("SELECT count(*) FROM console_replicas WHERE id = %s", ra) == [(0,)], "A reaped"
        )
        assert lb.connections[("127.0.0.1", pair.b.defender_port)] > 0


def test_connection_state_after_crash_and_restart(pair: Pair) -> None:
    only_a = pair.fleet(_addr(pair.a), 3, "crash")  # pinned to A: they cannot move
    ra = pair.replica_id(pair.a)
    assert all(pair.defenders()[d]["connected"] for d in only_a.ids())
    _kill(pair.a)
    # B reaps A when its lease expires: no stale "connected" rows for a dead replica
    _wait(
        lambda: not any(pair.defenders()[d]["connected"] for d in only_a.ids()), "A's defenders disconnected"
    )
    with pair.b.api() as c:
        assert [r["id"] for r in c.get("/cluster/replicas").json()["replicas"]] == [pair.replica_id(pair.b)]

    # A comes back (same data dir, same database, same ports): its defenders reconnect to the new process
    pair.a.args = ["--port", str(pair.a.port), "--defender-port", str(pair.a.defender_port)]
    pair.a.start()
    ra2 = pair.replica_id(pair.a)
    assert ra2 != ra
    _wait(
        lambda: all(
            row["connected"] and row["replica_id"] == ra2
            for d, row in pair.defenders().items()
            if d in only_a.ids()
        ),
        "the defenders connected to A's new process",
    )
    # a clean stop hands its defenders back at once (no lease to wait for)
    pair.a.stop()
    rows = pair.sql("SELECT count(*) FROM defenders WHERE connected AND replica_id = %s", ra2)
    assert rows == [(0,)]
    assert pair.sql("SELECT count(*) FROM console_replicas WHERE id = %s", ra2) == [(0,)]


def test_second_console_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    first = RunningConsole(tmp_path / "one").start()
    try:
        second = RunningConsole(tmp_path / "two")
        second.data_dir.mkdir()
        for name in ("ca.pem", "ca-key.pem"):
            shutil.copy(first.data_dir / name, second.data_dir / name)
        db = f"sqlite:///{first.data_dir / 'garrison.db'}"
        for data_dir, extra in ((first.data_dir, []), (second.data_dir, ["--db", db])):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "garrison",
                    "console",
                    "--data-dir",
                    str(data_dir),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--defender-port",
                    "0",
                    *extra,
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert out.returncode == 2, out.stdout + out.stderr
            assert f"already serves the SQLite database {first.data_dir / 'garrison.db'}" in out.stderr
            assert "PostgreSQL" in out.stderr
        with first.api() as c:  # the first one is unharmed
            assert c.get("/defenders/summary").status_code == 200
    finally:
        first.stop()


def _restart_postgres_immediately(pair: Pair) -> None:
    """`pg_ctl restart -m immediate`: every backend killed without a shutdown checkpoint (as a
    crash), then the server started again with its previous options (postmaster.opts)."""
    data_dir = pair.sql("SHOW data_directory")[0][0]
    pg_ctl = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))), None)
    if pg_ctl is None or os.geteuid() != 0:
        pytest.skip("restarting the test PostgreSQL needs root and the server's pg_ctl")
    log = Path(data_dir).parent / "log"  # scripts/pg-test-server's layout; the server keeps it open
    subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            str(pg_ctl),
            "-D",
            data_dir,
            "-l",
            str(log),
            "-m",
            "immediate",
            "-w",
            "restart",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )


def test_postgres_restart_mid_ingest_loses_nothing_and_changes_still_flow(pair: Pair) -> None:
    n, per_defender = 6, 2000
    with TcpBalancer([("127.0.0.1", pair.a.defender_port), ("127.0.0.1", pair.b.defender_port)]) as lb:
        fleet = pair.fleet(f"127.0.0.1:{lb.port}", n, "pgcrash")
        ids = fleet.ids()
        expected = _ingest_across(
            pair, fleet, per_defender, midway=500, action=lambda: _restart_postgres_immediately(pair)
        )
        rows = pair.sql("SELECT defender_id, event_id FROM events")
        assert len(rows) == len(expected) and set(rows) == expected

        # both listeners came back: a change on either replica reaches every defender
        for console in (pair.a, pair.b):
            with console.api() as c:
                _wait(lambda c=c: c.get("/cluster/replicas").json()["listening"], "listener reconnected")
        rev = pair.b.put_policy(_policy("after-pg-restart"))["revision"]
        _wait(lambda: fleet.has_revision(rev), "the policy stored after the restart everywhere")
        # and the connection state is right: every defender connected to a live replica
        live = {pair.replica_id(pair.a), pair.replica_id(pair.b)}
        _wait(
            lambda: all(
                row["connected"] and row["replica_id"] in live
                for d, row in pair.defenders().items()
                if d in ids
            ),
            "every defender connected to a live replica",
        )


def test_defenders_fail_over_across_the_bundles_addresses(pair: Pair) -> None:
    """No balancer: the bundle lists both replicas. A is SIGKILLed mid-ingest; its defenders move to
    B by themselves, every event is stored exactly once, and a policy changed afterwards reaches
    them through B."""
    bundle = decode_bundle(pair.a.install_bundle())
    ports = [int(a.rsplit(":", 1)[1]) for a in bundle.ws_addresses]
    assert ports == [pair.a.defender_port, pair.b.defender_port]  # A's own first, then B's
    fleet = pair.fleet(None, 4, "failover")
    ra, rb = pair.replica_id(pair.a), pair.replica_id(pair.b)
    ids = fleet.ids()
    assert all(pair.defenders()[d]["replica_id"] == ra for d in ids)  # the primary address is A's
    expected = _ingest_across(pair, fleet, 2000, midway=750, action=lambda: _kill(pair.a))
    rows = pair.sql("SELECT defender_id, event_id FROM events")
    assert len(rows) == len(expected) and set(rows) == expected  # nothing lost, nothing twice
    _wait(
        lambda: all(
            row["connected"] and row["replica_id"] == rb for d, row in pair.defenders().items() if d in ids
        ),
        "every defender connected to B",
    )
    assert all(c.address.endswith(f":{pair.b.defender_port}") for c in fleet.fleet.clients)
    started = time.monotonic()
    rev = pair.b.put_policy(_policy("after-failover"))["revision"]
    _wait(lambda: fleet.has_revision(rev), "the policy pushed through B")
    print(f"policy pushed through B reached the moved defenders in {time.monotonic() - started:.3f} s")


def test_login_throttle_is_shared_by_the_replicas(pair: Pair) -> None:
    """Failures spread over both replicas (and over spellings of the name, with spoofed
    X-Forwarded-For) add up: the user is locked on both, once, in the management audit."""
    pair.a.create_user("victim", "right-password-1", "auditor")
    with pair.a.api() as c:  # the attack below locks its address (127.0.0.1) too
        token = c.post("/authenticate", json={"username": "admin", "password": pair.a.admin_password}).json()
    details: list[str] = []
    for i in range(6):
        console = (pair.a, pair.b)[i % 2]
        name = ("victim", "Victim", " VICTIM")[i % 3]
        with httpx.Client(base_url=console.url + "/api/v1", verify=console.ssl_context()) as anon:
            for _ in range(20):  # respect the back-off (Retry-After), as a patient attacker does
                r = anon.post(
                    "/authenticate",
                    json={"username": name, "password": f"guess-{i}"},
                    headers={"x-forwarded-for": f"198.51.100.{i}"},
                )
                if "too many" not in r.json()["detail"]:
                    break
                time.sleep(0.25)
        assert r.status_code == 401
        details.append(r.json()["detail"])
    for console in (pair.a, pair.b):
        with httpx.Client(base_url=console.url + "/api/v1", verify=console.ssl_context()) as anon:
            r = anon.post("/authenticate", json={"username": "victim", "password": "right-password-1"})
        assert r.status_code == 401 and "locked" in r.json()["detail"], r.text
        assert int(r.headers["retry-after"]) > 500
    with pair.b.api(token=token["token"]) as c:
        audits = c.get("/audits/mgmt", params={"limit": 100}).json()
        metrics = c.get(pair.b.url + "/metrics").text
    assert len([a for a in audits if a["action"] == "auth.login_failed"]) == 6
    locks = sorted(a["target"] for a in audits if a["action"] == "auth.lockout")
    assert locks == ["addr:127.0.0.1", "user:victim"]  # once each, though two replicas counted
    assert all(a["detail"]["address"] == "127.0.0.1" for a in audits if a["action"] == "auth.login_failed")
    assert 'garrison_login_failures_total{kind="failed"}' in metrics
    assert re.search(r"^garrison_login_throttle_keys [1-9]", metrics, re.M)  # both replicas' failures
    assert pair.sql("SELECT count(*) FROM login_throttle WHERE key = 'user:victim' AND locked_until > 0") == [
        (1,)
    ]


def test_live_audit_stream_shows_audits_ingested_by_another_replica(pair: Pair) -> None:
    """The web UI's stream on A carries the audits B stores: B's NOTIFY wakes A's stream (its
    backstop read is an hour away in these replicas)."""
    fleet = pair.fleet(_addr(pair.b), 1, "live")
    seen: list[str] = []
    opened = threading.Event()

    def read_stream() -> None:
        with (
            pair.a.api() as c,
            c.stream(
                "GET", "/audits/runtime/app-embedded/stream", timeout=httpx.Timeout(WAIT_S, read=WAIT_S)
            ) as r,
        ):
            for line in r.iter_lines():
                if line.startswith("event: hello"):
                    opened.set()
                if line.startswith("data:") and "live-audit-" in line:
                    seen.append(line)
                    if len(seen) >= 3:
                        return

    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    assert opened.wait(WAIT_S)
    time.sleep(1.5)  # let the stream finish its first read: what follows must come from a wake-up
    fleet.submit(
        0, [AuditEvent(id=f"live-audit-{k}", type="network", effect="alert", dest_port=k) for k in range(3)]
    )
    reader.join(WAIT_S)
    assert len(seen) == 3, seen
