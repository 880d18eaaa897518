"""Group commit: concurrent callers' items share one store transaction, each gets its own result.

While one transaction runs in a worker thread, the items that arrive queue up and go into the next
one together, so N callers cost about one transaction (plus a little each) instead of N — what a
single-writer store (SQLite) needs when thousands of defenders write at once. A caller's future is
resolved only after `apply` returned, i.e. after the commit: nothing is acknowledged before it is
durable. If `apply` raises, every caller of that group gets the exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        apply: Callable[[Sequence[T]], Sequence[R]],
        *,
        max_weight: int = 10_000,
        weight: Callable[[T], int] = lambda _item: 1,
    ) -> None:
        """`apply(items)` runs in a thread and returns one result per item, in order; a group holds
        items up to `max_weight` in total (at least one item)."""
        self.apply = apply
        self.max_weight = max_weight
        self.weight = weight
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.groups = 0
        """transactions run so far (tests and benchmarks compare it with the items submitted)"""

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while self._pending:
            take, size = 0, 0
            while take < len(self._pending) and (
                take == 0 or size + self.weight(self._pending[take][0]) <= self.max_weight
            ):
                size += self.weight(self._pending[take][0])
                take += 1
            group, self._pending = self._pending[:take], self._pending[take:]
            self.groups += 1
            try:
                results = await asyncio.to_thread(self.apply, [item for item, _ in group])
            except Exception as exc:
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(group, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
