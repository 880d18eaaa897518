"""Server push for the web UI: new audits and defender counts as a Server-Sent Events stream.

Why the store and not only in-memory events: several console replicas share one PostgreSQL
database, and a defender may report to any of them. Each stream therefore reads new rows from the
store (by `seq`), woken at once by this replica's own ingest (`LiveHub.notify`) and by the others'
(`NOTIFY garrison_audits`, see services/cluster.py), and at least every `BACKSTOP_S` (a
notification lost while the listener reconnects). On PostgreSQL a row's `seq` is taken before its transaction commits, so a
lower `seq` can become visible after a higher one: the stream's resume cursor only moves past rows
received more than `PG_SETTLE_S` ago, and rows above it that were already sent are not sent again.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from garrison.console.store.events import EventFilter
from garrison.console.store.open import Store

POLL_S = 1.0  # the map's change stream reads at least this often (reports have no notification)
BACKSTOP_S = float(os.environ.get("GARRISON_LIVE_BACKSTOP_S", "5"))
MIN_GAP_S = 0.2  # at most five reads per second per stream, however busy ingest is
SUMMARY_EVERY_S = 2.0
KEEPALIVE_S = 15.0
REAUTH_EVERY_S = 30.0  # a revoked token or deleted user loses its stream within this
BATCH = 500
PG_SETTLE_S = 5.0


class LiveHub:
    """Wakes the open streams when this console stores new audits (called on the event loop)."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()
        self.closed = False
        self.generation = 0
        """counts notifications: a stream that was busy when one came still sees it"""

    def notify(self) -> None:
        self.generation += 1
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    def close(self) -> None:
        """Console shutting down: end every stream so the HTTPS server need not wait for them."""
        self.closed = True
        self.notify()

    async def wait(self, timeout: float, seen: int | None = None) -> None:
        """Until the next notification (at once if there was one since generation `seen`)."""
        if seen is not None and seen != self.generation:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(fut)


class _Credentials:
    """A stream's credentials, asked again every REAUTH_EVERY_S (a revoked token ends the stream)."""

    def __init__(self, still_allowed: Callable[[], bool]) -> None:
        self._check = still_allowed
        self._next = time.monotonic() + REAUTH_EVERY_S

    async def lost(self, now: float) -> bool:
        if now < self._next:
            return False
        self._next = now + REAUTH_EVERY_S
        return not await asyncio.to_thread(self._check)


async def change_stream(
    hub: LiveHub, mark: Callable[[], Any], still_allowed: Callable[[], bool], *, event: str = "map",
    min_gap_s: float = 1.0,
) -> AsyncIterator[str]:
    """`event` (data: {"at": time}) whenever `mark()` (read in a thread) differs from the last one —
    the page then fetches what changed — at most once per `min_gap_s`; read at once when this console
    stores audits (anomalies) and at least every POLL_S for reports and other replicas' writes."""
    last = await asyncio.to_thread(mark)
    creds = _Credentials(still_allowed)
    next_keepalive = time.monotonic()
    yield "retry: 3000\nevent: hello\ndata: {}\n\n"
    while not hub.closed:
        await asyncio.sleep(min_gap_s)
        await hub.wait(POLL_S)
        now = time.monotonic()
        if await creds.lost(now):
            yield _sse("signed-out", {})
            return
        fresh = await asyncio.to_thread(mark)
        if fresh != last:
            last = fresh
            yield _sse(event, {"at": time.time()})
        elif now >= next_keepalive:
            yield ": keep-alive\n\n"
            next_keepalive = now + KEEPALIVE_S


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def audit_stream(
    store: Store,
    hub: LiveHub,
    flt: EventFilter,
    after: int | None,
    still_allowed: Callable[[], bool],
) -> AsyncIterator[str]:
    """`audit` events (oldest first; `id:` is the cursor to resume from with `after=`), `defenders`
    events (connected/disconnected counts) when they change, `skipped` when more audits arrived than
    a stream can carry (the client reloads its first page), and a keep-alive comment."""
    settle = PG_SETTLE_S if store.dialect == "postgresql" else 0.0
    cursor = after if after is not None else await asyncio.to_thread(store.events.max_seq)
    sent: set[int] = set()
    summary: dict[str, Any] | None = None
    creds = _Credentials(still_allowed)
    next_summary = next_keepalive = next_read = time.monotonic()
    seen = hub.generation
    yield f"retry: 3000\nid: {cursor}\nevent: hello\ndata: {{}}\n\n"
    while not hub.closed:
        now = time.monotonic()
        woken, seen = seen != hub.generation, hub.generation
        if await creds.lost(now):
            yield _sse("signed-out", {})
            return
        if now >= next_summary:
            fresh = await asyncio.to_thread(store.defenders.summary)
            if fresh != summary:
                summary = fresh
                yield _sse("defenders", fresh)
            next_summary = now + SUMMARY_EVERY_S
        if woken or now >= next_read:  # audits are read when some replica stored any (or backstop)
            cursor, sent, events = await _new_audits(store, flt, cursor, sent, settle)
            for event in events:
                yield event
            next_read = now + (POLL_S if settle and sent else BACKSTOP_S)  # unsettled: re-read
        if now >= next_keepalive:
            yield ": keep-alive\n\n"
            next_keepalive = now + KEEPALIVE_S
        await asyncio.sleep(MIN_GAP_S)
        await hub.wait(max(0.0, min(next_read, next_summary) - time.monotonic()), seen)


async def _new_audits(
    store: Store, flt: EventFilter, cursor: int, sent: set[int], settle: float
) -> tuple[int, set[int], list[str]]:
    """(new cursor, seqs sent above it, SSE events) for the audits stored after `cursor`."""
    events: list[str] = []
    rows = await asyncio.to_thread(store.events.after, flt, cursor, limit=BATCH)
    if len(rows) == BATCH:  # a flood: jump to the newest instead of falling further behind
        cursor = await asyncio.to_thread(store.events.max_seq)
        events.append(_sse("skipped", {"reason": f"more than {BATCH} new audits at once"}, cursor))
        return cursor, set(), events
    settled_before = time.time() - settle
    out, contiguous = [], True
    for seq, received_at, body in rows:
        if seq not in sent:
            out.append(body)
            sent.add(seq)
        if contiguous and received_at < settled_before:
            cursor = seq
        else:
            contiguous = False
    events.extend(_sse("audit", body, cursor) for body in out)
    return cursor, {s for s in sent if s > cursor}, events
