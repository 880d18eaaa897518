"""Learning profiles: SQL for profiles, their items and the per-run counts behind each item.

An item's count is the sum of the cumulative counts its sources (defender runs) reported, so a
report sent twice, or late, changes nothing; `instances` is how many distinct app instances saw it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, case, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from garrison.console.store.tables import profile_items, profile_sources, profiles

KINDS = ("process", "destination", "dns", "listen")
_CHUNK = 400
MAX_ADDRESSES = 64
MAX_ITEMS_PER_KIND = 20_000
"""distinct items of one kind one profile keeps: whatever its defenders report (an app under attack
connecting everywhere, a hostile defender), the console's store and the map stay bounded"""


@dataclass(frozen=True)
class SeenItem:
    kind: str
    key: str
    facts: dict[str, Any]
    count: int
    first_seen: float
    last_seen: float


class ProfileStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- profiles -------------------------------------------------------------------------------
    def find(self, org: str, space: str, app: str) -> dict[str, Any] | None:
        q = select(profiles).where(profiles.c.org == org, profiles.c.space == space, profiles.c.app == app)
        with self.engine.connect() as c:
            row = c.execute(q).mappings().first()
        return dict(row) if row else None

    def get(self, profile_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(profiles).where(profiles.c.id == profile_id)).mappings().first()
        return dict(row) if row else None

    def ensure(
        self, org: str, space: str, app: str, *, window_hours: float = 24.0, stable_hours: float = 4.0
    ) -> dict[str, Any]:
        """The app's profile, created in the learning state if it has none (safe across replicas)."""
        for _ in range(5):
            row = self.find(org, space, app)
            if row is not None:
                return row
            now = time.time()
            try:
                with self.engine.begin() as c:
                    c.execute(
                        insert(profiles).values(
                            org=org, space=space, app=app, state="learning", created_at=now,
                            learning_since=now, window_hours=window_hours, stable_hours=stable_hours,
                            addresses=[], routes=[],
                        )
                    )  # fmt: skip
            except IntegrityError:
                continue
        row = self.find(org, space, app)
        assert row is not None
        return row

    def update(self, profile_id: int, **values: Any) -> None:
        with self.engine.begin() as c:
            c.execute(update(profiles).where(profiles.c.id == profile_id).values(**values))

    def change_mark(self) -> tuple[Any, ...]:
        """Moves whenever a profile is created, reported to, accepted or enforced (what the discovery
        map shows): one aggregate over the profiles table, cheap to ask every second."""
        q = select(
            func.count(), func.max(profiles.c.last_report_at), func.max(profiles.c.accepted_at),
            func.max(profiles.c.learning_since), func.sum(case((profiles.c.state == "enforcing", 1), else_=0)),
        )  # fmt: skip
        with self.engine.connect() as c:
            return tuple(c.execute(q).one())

    def claim_auto_accept(self, profile_id: int, mode: str) -> bool:
        """Take the profile's auto-accept (cleared to "off"): True for exactly one caller, whichever
        console replica ran the check, so a proposal is accepted by the system once."""
        q = (update(profiles)
             .where(profiles.c.id == profile_id, profiles.c.state == "learning", profiles.c.auto_accept == mode)
             .values(auto_accept="off"))  # fmt: skip
        with self.engine.begin() as c:
            return c.execute(q).rowcount == 1

    def list(
        self,
        *,
        org: str | None = None,
        space: str | None = None,
        app: str | None = None,
        state: str | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        q = select(profiles).order_by(profiles.c.org, profiles.c.space, profiles.c.app)
        for col, val in ((profiles.c.org, org), (profiles.c.space, space), (profiles.c.app, app)):
            if val:
                q = q.where(col == val)
        if state:
            q = q.where(profiles.c.state == state)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q.limit(limit).offset(offset)).mappings()]

    def item_summary(self, profile_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """Items per kind, and distinct instances that reported, for each profile."""
        out: dict[int, dict[str, int]] = {pid: {k: 0 for k in KINDS} for pid in profile_ids}
        if not profile_ids:
            return out
        q = (
            select(profile_items.c.profile_id, profile_items.c.kind, func.count())
            .where(profile_items.c.profile_id.in_(list(profile_ids)))
            .group_by(profile_items.c.profile_id, profile_items.c.kind)
        )
        inst = (
            select(profile_items.c.profile_id, func.count(func.distinct(profile_sources.c.instance)))
            .join(profile_sources, profile_sources.c.item_id == profile_items.c.id)
            .where(profile_items.c.profile_id.in_(list(profile_ids)))
            .group_by(profile_items.c.profile_id)
        )
        with self.engine.connect() as c:
            for pid, kind, n in c.execute(q):
                out[pid][kind] = int(n)
            for pid, n in c.execute(inst):
                out[pid]["instances"] = int(n)
        return out

    # -- items ----------------------------------------------------------------------------------
    def items(
        self, profile_ids: Iterable[int] | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        q = select(profile_items).order_by(profile_items.c.id)
        if profile_ids is not None:
            q = q.where(profile_items.c.profile_id.in_(list(profile_ids)))
        if kind:
            q = q.where(profile_items.c.kind == kind)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def ingest(
        self,
        profile_id: int,
        source: str,
        instance: int,
        seen: Sequence[SeenItem],
        *,
        addresses: Sequence[str] = (),
        routes: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """Merge one report; returns the items that are new to the profile. Retried on a race with a
        replica inserting the same item."""
        for attempt in range(5):
            try:
                with self.engine.begin() as c:
                    return self._ingest(c, profile_id, source[:330], instance, seen, addresses, routes)
            except IntegrityError:
                if attempt == 4:
                    raise
        return []

    def _ingest(
        self,
        c: Connection,
        profile_id: int,
        source: str,
        instance: int,
        seen: Sequence[SeenItem],
        addresses: Sequence[str],
        routes: Sequence[str],
    ) -> list[dict[str, Any]]:
        now = time.time()
        new: list[dict[str, Any]] = []
        touched: list[int] = []
        by_kind: dict[str, list[SeenItem]] = {}
        for s in seen:
            by_kind.setdefault(s.kind, []).append(s)
        dropped = 0
        for kind, group in by_kind.items():
            room = MAX_ITEMS_PER_KIND - int(
                c.execute(
                    select(func.count())
                    .select_from(profile_items)
                    .where(profile_items.c.profile_id == profile_id, profile_items.c.kind == kind)
                ).scalar_one()
            )
            for i in range(0, len(group), _CHUNK):
                chunk = group[i : i + _CHUNK]
                existing = {
                    r.key: r
                    for r in c.execute(
                        select(profile_items).where(
                            profile_items.c.profile_id == profile_id,
                            profile_items.c.kind == kind,
                            profile_items.c.key.in_([s.key for s in chunk]),
                        )
                    )
                }
                for s in chunk:
                    row = existing.get(s.key)
                    if row is None and room <= 0:
                        dropped += 1
                        continue
                    if row is None:
                        room -= 1
                        values = dict(
                            profile_id=profile_id, kind=kind, key=s.key, facts=s.facts,
                            first_seen=s.first_seen, last_seen=s.last_seen, count=0, instances=0,
                        )  # fmt: skip
                        item_id = c.execute(insert(profile_items).values(**values)).inserted_primary_key[0]
                        new.append({**values, "id": item_id})
                    else:
                        item_id = row.id
                        facts = _merge_facts(dict(row.facts), s.facts)
                        c.execute(
                            update(profile_items)
                            .where(profile_items.c.id == item_id)
                            .values(
                                first_seen=min(row.first_seen, s.first_seen),
                                last_seen=max(row.last_seen, s.last_seen),
                                facts=facts,
                            )
                        )
                    touched.append(int(item_id))
                    self._source(c, int(item_id), source, instance, s)
        self._recount(c, touched)
        prof = c.execute(
            select(profiles.c.addresses, profiles.c.routes).where(profiles.c.id == profile_id)
        ).first()
        values: dict[str, Any] = {"last_report_at": now}
        if dropped:
            values["dropped"] = profiles.c.dropped + dropped
        if new:
            values["last_new_at"] = now
        if prof is not None:
            addrs = _union(list(prof.addresses or []), addresses, MAX_ADDRESSES)
            rts = _union(list(prof.routes or []), routes, MAX_ADDRESSES)
            if addrs != list(prof.addresses or []):
                values["addresses"] = addrs
            if rts != list(prof.routes or []):
                values["routes"] = rts
        c.execute(update(profiles).where(profiles.c.id == profile_id).values(**values))
        return new

    @staticmethod
    def _source(c: Connection, item_id: int, source: str, instance: int, s: SeenItem) -> None:
        where = and_(profile_sources.c.item_id == item_id, profile_sources.c.source == source)
        old = c.execute(select(profile_sources.c.count, profile_sources.c.last_seen).where(where)).first()
        if old is None:
            c.execute(
                insert(profile_sources).values(
                    item_id=item_id, source=source, instance=instance, count=s.count, last_seen=s.last_seen
                )
            )
        elif s.count > old.count or s.last_seen > old.last_seen:
            c.execute(
                update(profile_sources)
                .where(where)
                .values(count=max(old.count, s.count), last_seen=max(old.last_seen, s.last_seen))
            )

    @staticmethod
    def _recount(c: Connection, item_ids: list[int]) -> None:
        for i in range(0, len(item_ids), _CHUNK):
            chunk = item_ids[i : i + _CHUNK]
            q = (
                select(
                    profile_sources.c.item_id,
                    func.sum(profile_sources.c.count),
                    func.count(func.distinct(profile_sources.c.instance)),
                )
                .where(profile_sources.c.item_id.in_(chunk))
                .group_by(profile_sources.c.item_id)
            )
            for item_id, total, n in c.execute(q).all():
                c.execute(
                    update(profile_items)
                    .where(profile_items.c.id == item_id)
                    .values(count=int(total or 0), instances=int(n))
                )

    def reset(self, profile_id: int) -> None:
        """Forget what was learned (a new learning window starts from nothing)."""
        with self.engine.begin() as c:
            c.execute(delete(profile_items).where(profile_items.c.profile_id == profile_id))


def _union(old: list[str], new: Iterable[str], cap: int) -> list[str]:
    out = list(old)
    for v in new:
        if v and v not in out:
            out.append(v)
    return out[-cap:]


def _merge_facts(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Identity facts are equal by construction (they make the key); names seen for a destination
    accumulate (bounded), the newest file hash of an executable wins."""
    out = {**old, **{k: v for k, v in new.items() if k != "names"}}
    if "names" in old or "names" in new:
        out["names"] = _union(list(old.get("names") or []), new.get("names") or [], 8)
    return out
