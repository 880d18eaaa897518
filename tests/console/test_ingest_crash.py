"""Killing the console (SIGKILL), or its PostgreSQL (immediate shutdown), in the middle of an ingest
burst loses nothing and stores nothing twice: acks are sent only after the (group) commit, and what
was not acked is re-sent from the defenders' spools once the console (same ports) or the database
is back."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from garrison.channel.bundle import decode_bundle
from garrison.channel.simulate import SimulatedFleet
from garrison.policy.audit import AuditEvent
from tests.fixtures.console import RunningConsole, fresh_pg_database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DEFENDERS, PER = 20, 1000


def _events(prefix: str) -> list[AuditEvent]:
    return [
        AuditEvent(id=f"{prefix}-{i:06d}", type="network", effect="alert", rule="crash", dest_port=443)
        for i in range(PER)
    ]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_console_killed_mid_ingest_loses_and_duplicates_nothing(db: str, tmp_path: Path) -> None:
    drop = None
    db_url = None
    if db == "postgresql":
        base = os.environ.get("GARRISON_TEST_PG_URL")
        if not base:
            pytest.skip(
                "GARRISON_TEST_PG_URL is not set (scripts/test starts a PostgreSQL cluster and sets it)"
            )
        db_url, drop = fresh_pg_database(base)
    console = RunningConsole(tmp_path / "console", db_url=db_url).start()
    try:
        kills = asyncio.run(_scenario(console, lambda: _kill_console(console)))
        assert kills >= 1
        with console.api() as api:
            r = api.get("/audits/runtime/app-embedded", params={"rule": "crash", "limit": 1})
            assert int(r.headers["Total-Count"]) == DEFENDERS * PER  # nothing lost, nothing twice
    finally:
        console.stop()
        if drop is not None:
            drop()


async def _kill_console(console: RunningConsole) -> None:
    assert console.proc is not None
    console.proc.kill()
    await asyncio.to_thread(console.proc.wait, 30)
    console.args = ["--port", str(console.port), "--defender-port", str(console.defender_port)]
    await asyncio.to_thread(console.start)


async def _scenario(console: RunningConsole, crash: Callable[[], Awaitable[None]]) -> int:
    bundle = decode_bundle(await asyncio.to_thread(console.install_bundle))
    with tempfile.TemporaryDirectory() as d:
        fleet = SimulatedFleet(bundle, Path(d), DEFENDERS, prefix="crash", batch_size=100, window=4)
        await fleet.start()
        for c in fleet.clients:
            c.backoff_base, c.backoff_max = 0.05, 0.5
        total = DEFENDERS * PER
        for i, c in enumerate(fleet.clients):
            c.spool.append(_events(f"crash-{i}"))
        for c in fleet.clients:
            c.wake()
        kills = 0
        deadline = time.monotonic() + 120
        while fleet.pending() == total and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if 0 < fleet.pending() < total:  # mid-ingest: some batches acked, others in flight
            await crash()
            kills += 1
        await fleet.wait_delivered(timeout=300)
        await fleet.wait_connected(60)

        def connected() -> int:
            with console.api() as api:
                return int(api.get("/defenders/summary").json()["connected"])

        # connection state is right after the crash: everyone reconnected and is marked so
        deadline = time.monotonic() + 60
        while (n := await asyncio.to_thread(connected)) != DEFENDERS and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert n == DEFENDERS
        await fleet.stop()
    return kills


class _PrivatePostgres:
    """A PostgreSQL cluster of this test's own (the suite's shared one must not be killed)."""

    def __init__(self, root: Path) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins or os.geteuid() != 0 or shutil.which("runuser") is None:
            pytest.skip("needs the PostgreSQL server binaries and root (runs the cluster as 'postgres')")
        self.bin = Path(bins[-1])
        self.dir = root
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        root.mkdir(parents=True, exist_ok=True)
        shutil.chown(root, "postgres")
        self._pg("initdb", "-D", str(root / "data"), "-U", "garrison", "--auth=trust", "-E", "UTF8")
        self.start()
        self._pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "garrison", "crash")
        self.url = f"postgresql://garrison@127.0.0.1:{self.port}/crash"

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
                       check=True, capture_output=True, timeout=120)  # fmt: skip

    def start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=100"
        self._pg(
            "pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-o", opts, "start"
        )

    def kill(self) -> None:
        self._pg("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "stop")


@pytest.fixture
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_PrivatePostgres]:
    pg = _PrivatePostgres(Path(tempfile.mkdtemp(prefix="garrison-crash-pg-")))
    try:
        yield pg
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(pg.bin / "pg_ctl"), "-D", str(pg.dir / "data"),
                        "-m", "immediate", "stop"], capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(pg.dir, ignore_errors=True)


def test_postgresql_killed_mid_ingest_loses_and_duplicates_nothing(
    private_pg: _PrivatePostgres, tmp_path: Path
) -> None:
    console = RunningConsole(tmp_path / "console", db_url=private_pg.url).start()

    async def crash() -> None:
        await asyncio.to_thread(private_pg.kill)  # like a crash: no shutdown checkpoint
        await asyncio.sleep(1.0)  # batches arriving now fail to store: not acked, kept in the spools
        await asyncio.to_thread(private_pg.start)  # recovers from its WAL

    try:
        assert asyncio.run(_scenario(console, crash)) >= 1
        with console.api() as api:
            r = api.get("/audits/runtime/app-embedded", params={"rule": "crash", "limit": 1})
            assert int(r.headers["Total-Count"]) == DEFENDERS * PER  # nothing lost, nothing twice
    finally:
        console.stop()
