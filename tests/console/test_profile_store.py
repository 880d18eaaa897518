"""Profile store: cumulative counts per source (idempotent), instances, the per-kind bound. SQLite and
PostgreSQL."""

from __future__ import annotations

from garrison.console.store import profiles as prof_store
from garrison.console.store.open import Store
from garrison.console.store.profiles import SeenItem


def _item(key: str, count: int, t: float = 100.0) -> SeenItem:
    return SeenItem("dns", key, {"name": key}, count, t, t + 1)


def test_counts_are_cumulative_per_source_and_bounded(store: Store, monkeypatch) -> None:
    p = store.profiles.ensure("o", "s", "a")
    assert store.profiles.ingest(p["id"], "d1/run1", 0, [_item("a.example", 3)])
    assert not store.profiles.ingest(p["id"], "d1/run1", 0, [_item("a.example", 3)])  # re-sent
    store.profiles.ingest(p["id"], "d1/run1", 0, [_item("a.example", 5, 200.0)])  # later, cumulative
    store.profiles.ingest(p["id"], "d2/run1", 1, [_item("a.example", 2, 50.0)])  # another instance
    store.profiles.ingest(p["id"], "d1/run2", 0, [_item("a.example", 1)])  # a restart of instance 0
    (it,) = store.profiles.items([p["id"]])
    assert (it["count"], it["instances"], it["first_seen"], it["last_seen"]) == (8, 2, 50.0, 201.0)

    monkeypatch.setattr(prof_store, "MAX_ITEMS_PER_KIND", 3)
    new = store.profiles.ingest(p["id"], "d1/run1", 0, [_item(f"n{i}.example", 1) for i in range(5)])
    assert len(new) == 2
    row = store.profiles.get(p["id"])
    assert row is not None and row["dropped"] == 3
    assert len(store.profiles.items([p["id"]])) == 3
    store.profiles.ingest(p["id"], "d1/run1", 0, [_item("a.example", 9)])  # known items still count
    assert store.profiles.items([p["id"]], kind="dns")[0]["count"] == 12
