"""Login-throttle state in the store, so every console replica counts the same failures.

Each change reads and rewrites a key's row under a row lock (PostgreSQL `SELECT ... FOR UPDATE`
after an `INSERT ... ON CONFLICT DO NOTHING`; SQLite's single writer), so two replicas failing the
same user at once both count: no lost update. Keys are locked in sorted order (no deadlock). Times
are the database's clock (replicas' clocks may disagree). The table is bounded: every
`PRUNE_EVERY` changes a replica deletes the rows that expired and, above `max_rows`, the rows least
recently failed (locked ones last), so an attacker with many addresses or user names cannot grow it
without limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection, Engine, case, delete, func, select, update

from garrison.console.store.db import db_now, insert_ignore
from garrison.console.store.tables import login_throttle

T = TypeVar("T")
PRUNE_EVERY = 100


@dataclass
class ThrottleRow:
    failures: int = 0
    wait_until: float = 0.0
    locked_until: float = 0.0
    last_failure: float = 0.0

    @property
    def empty(self) -> bool:
        return self.failures == 0 and self.wait_until == 0 and self.locked_until == 0


Change = Callable[[dict[str, ThrottleRow], float], T]
"""(rows by key, now) → result; mutates the rows in place (a row left `empty` is deleted)."""


class ThrottleStore:
    def __init__(self, engine: Engine, clock: Callable[[], float] | None = None) -> None:
        """`clock` replaces the database clock (tests that step time)."""
        self.engine = engine
        self.clock = clock
        self._changes = 0
        self._count_lock = threading.Lock()

    def _now(self, conn: Connection) -> float:
        if self.clock is not None:
            return self.clock()
        if conn.dialect.name == "postgresql":
            return float(conn.execute(select(db_now(conn))).scalar_one())
        return time.time()

    def read(self, keys: Sequence[str]) -> tuple[float, dict[str, ThrottleRow]]:
        """(now, the rows that exist): a plain read, no lock (a login with no failures writes nothing)."""
        with self.engine.connect() as c:
            now = self._now(c)
            rows = c.execute(select(login_throttle).where(login_throttle.c.key.in_(list(keys)))).mappings()
            return now, {r["key"]: _row(r) for r in rows}

    def change(self, keys: Sequence[str], apply: Change[T], *, forget_s: float, max_rows: int) -> T:
        """Run `apply` on the keys' rows (created empty when missing) atomically and write them back."""
        ordered = sorted(set(keys))
        with self.engine.begin() as c:
            c.execute(
                insert_ignore(self.engine, login_throttle)
                .values([{"key": k} for k in ordered])
                .on_conflict_do_nothing(index_elements=["key"])
            )
            q = select(login_throttle).where(login_throttle.c.key.in_(ordered)).order_by(login_throttle.c.key)
            if c.dialect.name == "postgresql":
                q = q.with_for_update()
            rows = {r["key"]: _row(r) for r in c.execute(q).mappings()}
            now = self._now(c)
            result = apply(rows, now)
            for key, row in rows.items():
                if row.empty:
                    c.execute(delete(login_throttle).where(login_throttle.c.key == key))
                else:
                    c.execute(
                        update(login_throttle)
                        .where(login_throttle.c.key == key)
                        .values(
                            failures=row.failures,
                            wait_until=row.wait_until,
                            locked_until=row.locked_until,
                            last_failure=row.last_failure,
                        )
                    )
            if self._due():
                self._prune(c, now, forget_s, max_rows)
        return result

    def clear(self, keys: Sequence[str]) -> None:
        with self.engine.begin() as c:
            c.execute(delete(login_throttle).where(login_throttle.c.key.in_(list(keys))))

    def count(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(select(func.count()).select_from(login_throttle)).scalar_one())

    def prune(self, *, forget_s: float, max_rows: int) -> None:
        with self.engine.begin() as c:
            self._prune(c, self._now(c), forget_s, max_rows)

    def _due(self) -> bool:
        with self._count_lock:
            self._changes += 1
            return self._changes % PRUNE_EVERY == 0

    @staticmethod
    def _prune(c: Connection, now: float, forget_s: float, max_rows: int) -> None:
        t = login_throttle.c
        c.execute(
            delete(login_throttle).where(
                t.locked_until <= now, t.wait_until <= now, t.last_failure < now - forget_s
            )
        )
        over = int(c.execute(select(func.count()).select_from(login_throttle)).scalar_one()) - max_rows
        if over > 0:  # a flood of distinct keys: keep the newest 90 %, locked keys evicted last
            victims = (
                select(t.key)
                .order_by(case((t.locked_until > now, 1), else_=0), t.last_failure)
                .limit(over + max_rows // 10)
                .scalar_subquery()
            )
            c.execute(delete(login_throttle).where(t.key.in_(victims)))


def _row(r: object) -> ThrottleRow:
    m = dict(r)  # type: ignore[call-overload]
    return ThrottleRow(
        failures=int(m["failures"]),
        wait_until=float(m["wait_until"]),
        locked_until=float(m["locked_until"]),
        last_failure=float(m["last_failure"]),
    )
