"""The replica bookkeeping in the store (SQLite and PostgreSQL): change versions bumped with the
change itself, holder-guarded disconnects, lease expiry, commands claimed once."""

from __future__ import annotations

from sqlalchemy import update

from garrison.console.store.open import Store
from garrison.console.store.tables import console_replicas


def _defender(store: Store, name: str, replica: str) -> str:
    did = store.defenders.register(name, name.ljust(64, "0"), {"app_name": name}, None)
    store.defenders.connected(did, {"hostname": "h", "kernel": {}, "replica_id": replica})
    return did


def _expire(store: Store, replica: str) -> None:
    with store.engine.begin() as c:
        c.execute(update(console_replicas).where(console_replicas.c.id == replica).values(heartbeat_at=0.0))


def test_changes_bump_their_topic_in_the_same_transaction(store: Store) -> None:
    before = store.cluster.versions()
    assert set(before) == {"policy", "settings", "auth", "defenders", "commands"}
    store.policies.save("runtime/app-embedded", {"rules": []}, "t")
    store.settings.put("alerts", {"min_severity": "high"})
    store.users.create("u1", "hash", "auditor")
    store.users.update("u1", role="operator")
    did = _defender(store, "rev", "r1")
    store.defenders.revoke(did)
    after = store.cluster.versions()
    assert after["policy"] == before["policy"] + 1
    assert after["settings"] == before["settings"] + 1
    assert after["auth"] == before["auth"] + 1
    assert after["defenders"] == before["defenders"] + 1
    assert store.cluster.revoked_held_by("r1") == [did]


def test_disconnect_only_by_the_holder_and_lease_expiry(store: Store) -> None:
    for r in ("dead", "alive"):
        store.cluster.register(r, hostname="h", pid=1, url="", ws_address="")
    moved = _defender(store, "moved", "dead")
    stays = _defender(store, "stays", "dead")
    other = _defender(store, "other", "alive")
    # `moved` reconnects to the live replica; the old replica's late disconnect must not undo that
    store.defenders.connected(moved, {"hostname": "h", "kernel": {}, "replica_id": "alive"})
    store.defenders.disconnected(moved, "dead")
    assert store.defenders.get(moved)["connected"]
    assert store.cluster.holder(moved, 30) == "alive"

    assert store.cluster.reap(30) == 0  # every lease is fresh
    _expire(store, "dead")
    assert store.cluster.holder(stays, 30) is None  # an expired holder holds nothing
    assert store.cluster.reap(30) == 1
    assert not store.defenders.get(stays)["connected"]
    assert store.defenders.get(moved)["connected"] and store.defenders.get(other)["connected"]
    assert [r["id"] for r in store.cluster.replicas()] == ["alive"]
    assert store.cluster.heartbeat("alive") and not store.cluster.heartbeat("dead")

    # a replica that lost its lease re-asserts what it still holds
    store.cluster.register("dead", hostname="h", pid=1, url="", ws_address="")
    store.cluster.reassert("dead", [stays])
    assert store.defenders.get(stays)["connected"] and store.cluster.holder(stays, 30) == "dead"
    store.cluster.release("dead")
    assert not store.defenders.get(stays)["connected"] and store.cluster.holder(stays, 30) is None


def test_routed_commands_are_claimed_once_and_fail_with_their_replica(store: Store) -> None:
    store.cluster.register("holder", hostname="h", pid=1, url="", ws_address="")
    v = store.cluster.versions()["commands"]
    store.cluster.submit_command("c1", "d1", "holder", "upload_forensics", {"max_bytes": 1024})
    store.cluster.submit_command("c2", "d2", "holder", "upload_forensics", {})
    assert store.cluster.versions()["commands"] == v + 2
    claimed = store.cluster.claim_commands("holder")
    assert sorted(c["id"] for c in claimed) == ["c1", "c2"]
    assert store.cluster.claim_commands("holder") == []
    store.cluster.finish_command("c1", ok=True, data={"records": [1]}, error="")
    done = store.cluster.command("c1")
    assert done is not None and done["state"] == "done" and done["data"] == {"records": [1]}
    _expire(store, "holder")
    store.cluster.reap(30)
    failed = store.cluster.command("c2")
    assert failed is not None and failed["state"] == "done" and failed["error"] == "replica_gone"
    store.cluster.drop_command("c1")
    assert store.cluster.command("c1") is None
