"""The store without a server: migrations match the tables, URL handling, idempotent event batches."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from garrison.console.store.db import DatabaseUrlError, normalise_url
from garrison.console.store.events import EventFilter
from garrison.console.store.open import Store
from garrison.console.store.tables import metadata
from garrison.policy.audit import AuditEvent
from tests.fixtures.console import fresh_pg_database


def test_migrations_match_the_tables(store: Store):
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_stored_event_body_is_the_models_json(store: Store):
    """The body is serialised from the model's field dict: the same JSON as model_dump_json."""
    ev = AuditEvent(
        type="process", effect="prevent", severity="high", app_name="body", pid=7, argv=["sh", "-c", "é\u0000"],
        dest_port=443, time=1733123456.125, extra={"nested": {"list": [1, 2.5, None, True]}, "s": "x"},
    )  # fmt: skip
    store.events.insert_batch([ev], "d-body")
    (body,) = store.events.query(EventFilter(app="body"), limit=10, offset=0)
    assert body == json.loads(ev.model_copy(update={"defender_id": "d-body"}).model_dump_json())


def test_migrations_are_idempotent(store: Store, tmp_path: Path):
    again = Store.open(store.engine.url.render_as_string(hide_password=False), tmp_path)
    again.engine.dispose()


def test_event_batches_are_idempotent(store: Store):
    events = [
        AuditEvent(type="process", effect="alert", app_name="s", defender_id="liar") for _ in range(1500)
    ]
    assert store.events.insert_batch(events, "d1") == {e.id for e in events}
    assert store.events.insert_batch(events[:10] + events[:10], "d1") == set()
    extra = AuditEvent(type="dns", effect="info", app_name="s")
    assert store.events.insert_batch([*events[:3], extra, extra], "d1") == {extra.id}
    # no duplicate within the batch, new events before and after stored ones (SQLite: the plain
    # INSERT fails part-way and its savepoint is rolled back before the exact path)
    first, last = (AuditEvent(type="dns", effect="info", app_name="s") for _ in range(2))
    assert store.events.insert_batch([first, *events[20:25], last], "d1") == {first.id, last.id}
    assert store.events.count(EventFilter(app="s")) == 1503
    assert {e["defender_id"] for e in store.events.query(EventFilter(app="s"), limit=1000, offset=0)} == {
        "d1"
    }


def test_policy_revisions(store: Store):
    assert store.policies.current("k") is None
    assert store.policies.save("k", {"rules": [], "revision": 0}, "a") == 1
    assert store.policies.save("k", {"rules": [], "revision": 0}, "b") == 2
    assert store.policies.current("k") == (2, {"rules": [], "revision": 2})
    assert [h["author"] for h in store.policies.history("k")] == ["b", "a"]


def test_nonce_replay(store: Store):
    n = uuid.uuid4().hex
    assert store.defenders.claim_nonce(n, 100.0, 0.0)
    assert not store.defenders.claim_nonce(n, 101.0, 0.0)


def test_url_normalisation(tmp_path: Path):
    assert normalise_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'garrison.db'}"
    assert normalise_url("postgresql://u:p@h/db", tmp_path) == "postgresql+psycopg://u:p@h/db"
    assert normalise_url("postgres://u@h:5/db", tmp_path) == "postgresql+psycopg://u@h:5/db"
    for bad in ("mysql://h/db", "not a url"):
        with pytest.raises(DatabaseUrlError):
            normalise_url(bad, tmp_path)


def test_group_commit_gives_each_batch_its_own_new_ids(store: Store):
    import asyncio

    from garrison.console.services.ingest import EventWriter

    shared = AuditEvent(type="process", effect="alert", app_name="g")
    batches = [
        [AuditEvent(type="process", effect="alert", app_name="g") for _ in range(50)] for _ in range(20)
    ]
    batches[3].append(shared)
    batches[7].append(shared)  # the same event re-sent on another connection

    async def run() -> list[set[str]]:
        writer = EventWriter(store, group_commit=True)
        # batch 7 re-sends, on another connection of the same defender, an event of batch 3
        return await asyncio.gather(
            *(writer.write(b, "d3" if i == 7 else f"d{i}") for i, b in enumerate(batches))
        )

    results = asyncio.run(run())
    assert sum(len(r) for r in results) == 20 * 50 + 1
    assert [shared.id in r for r in results].count(True) == 1
    for batch, new in zip(batches, results, strict=True):
        assert {e.id for e in batch if e.id != shared.id} <= new
    assert store.events.count(EventFilter(app="g")) == 1001


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield normalise_url(None, tmp_path)
        return
    base = os.environ.get("GARRISON_TEST_PG_URL")
    if not base:
        pytest.skip("GARRISON_TEST_PG_URL is not set (scripts/test starts a PostgreSQL cluster and sets it)")
    url, drop = fresh_pg_database(base)
    try:
        yield normalise_url(url, tmp_path)
    finally:
        drop()


def test_upgrade_from_0001_keeps_events_and_dedups_per_defender(db_url: str, tmp_path: Path):
    """A store made by the first release: its events survive the upgrade, and afterwards the same
    event id from another defender is stored while a re-send by the same defender is not."""
    from alembic import command
    from sqlalchemy import text

    from garrison.console.store.db import make_engine
    from garrison.console.store.migrate import alembic_config

    engine = make_engine(db_url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(
            text(
                "INSERT INTO events (event_id, time, received_at, defender_id, app_id, app_name, org, space,"
                " type, effect, severity, rule, control, message, body) VALUES ('old-event-1', 1, 1, 'd-old',"
                " '', 'legacy', '', '', 'process', 'alert', 'medium', '', '', 'm', '{}')"
            )
        )
        conn.execute(
            text("INSERT INTO defenders (id, kernel, stats, enrolled_at) VALUES ('d-old', '{}', '{}', 1)")
        )
    engine.dispose()
    store = Store.open(db_url, tmp_path)
    try:
        assert store.events.count(EventFilter(app="legacy")) == 1
        assert store.defenders.get("d-old")["key_fingerprint"] == ""
        ev = AuditEvent(id="old-event-1", type="process", effect="alert", app_name="legacy")
        assert store.events.insert_batch([ev], "d-old") == set()
        assert store.events.insert_batch([ev], "d-new") == {"old-event-1"}
        assert store.events.insert_groups([([ev], "d-third"), ([ev], "d-third"), ([ev], "d-new")]) == [
            {"old-event-1"},
            set(),
            set(),
        ]
        assert store.events.count(EventFilter(app="legacy")) == 3
    finally:
        store.engine.dispose()
