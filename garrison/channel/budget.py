"""A budget of bytes shared by every defender connection: how much event data the console holds at once.

Each connection's read loop validates a batch into event models and waits for the store to commit
it before reading the next one; with thousands of defenders sending at once that would put every
connection's batch in memory together (1,000 defenders x 200 events ≈ 700 MB of models), and the
console's RSS would grow with the fleet's burst, not with its own capacity. A connection takes its
message's size from this budget before validating it and gives it back once the batch is stored
and acked; when the budget is spent the read loops wait (FIFO), stop reading their sockets, and the
defenders' own send windows and TCP hold the rest — in the defenders' spools, which are durable.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

DEFAULT_BUDGET_BYTES = 8 * 1024 * 1024


class ByteBudget:
    def __init__(self, capacity: int = DEFAULT_BUDGET_BYTES) -> None:
        self.capacity = capacity
        self.available = capacity
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self.waits = 0
        """how many acquisitions had to wait (a sign the store, not the channel, sets the pace)"""

    def cost(self, size: int) -> int:
        """What a message of `size` bytes takes: a message larger than the whole budget takes all
        of it (it still goes through, alone)."""
        return min(max(size, 1), self.capacity)

    async def acquire(self, size: int) -> int:
        """Wait until `size` bytes are free (first come, first served); returns what was taken,
        to pass to release()."""
        n = self.cost(size)
        if not self._waiters and self.available >= n:
            self.available -= n
            return n
        self.waits += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted and cancelled at once: give it back
            else:
                with contextlib.suppress(ValueError):  # _wake may have dropped it already
                    self._waiters.remove((n, fut))
                self._wake()
            raise
        return n

    def release(self, n: int) -> None:
        self.available += n
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.available >= self._waiters[0][0]:
            n, fut = self._waiters.popleft()
            if fut.done():
                continue
            self.available -= n
            fut.set_result(None)

    @property
    def in_use(self) -> int:
        return self.capacity - self.available
