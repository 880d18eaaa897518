"""Mechanisms that keep one console fast with thousands of defenders (issue 10, scale part).

- Heartbeats are buffered and written together: the newest beat of each defender lands, a revoked
  defender is not touched, connection state is never set from a heartbeat, and close writes what
  is pending.
- The descriptor count behind the channel's admission is not re-listed for every connection.
- The console returns freed heap (malloc_trim) and reports its RSS in /metrics.
"""

from __future__ import annotations

import asyncio
import re

import httpx

from garrison.console import memory
from garrison.console.connections import FdCounter, fd_admission, open_fds
from garrison.console.services.heartbeats import HeartbeatBuffer
from garrison.console.store.open import Store


def test_heartbeats_are_batched_newest_wins_and_revoked_untouched(store: Store):
    ids = [f"hb{i}" for i in range(5)]
    rows = {d: store.defenders.register(d, f"{i:02d}" * 32, {}, None) for i, d in enumerate(ids)}
    store.defenders.connected(rows["hb0"], {"version": "1"})
    assert store.defenders.revoke(rows["hb4"])

    async def scenario() -> int:
        buf = HeartbeatBuffer(store, flush_s=3600)  # only explicit flushes in this test
        for n in range(3):
            for d in ids:
                buf.record(rows[d], {"n": n})
        assert buf.pending() == 5  # one entry per defender, whatever the number of beats
        store.defenders.disconnected(rows["hb0"])  # a beat in flight must not reconnect it
        await buf.flush()
        buf.record(rows["hb1"], {"n": 9})
        pending = buf.pending()
        await buf.aclose()  # shutdown writes what is pending
        return pending

    assert asyncio.run(scenario()) == 1
    got = {d: store.defenders.get(rows[d]) for d in ids}
    assert got["hb0"]["stats"] == {"n": 2} and got["hb0"]["connected"] is False
    assert got["hb1"]["stats"] == {"n": 9}
    assert got["hb2"]["stats"] == {"n": 2} and got["hb2"]["last_seen"] is not None
    assert got["hb4"]["stats"] == {} and got["hb4"]["revoked"] is True


def test_fd_admission_does_not_list_descriptors_per_connection():
    counter = FdCounter(refresh_s=3600, near_refresh_s=0.0)
    limit = open_fds() + 1000
    admit = fd_admission(limit, counter)
    threshold = limit - max(64, limit // 10)
    room = threshold - open_fds()
    answers = [admit() for _ in range(room + 50)]
    # The first `room` connections are admitted on one listing; then the estimate reaches the
    # threshold, the exact count is taken again (it errs high: nothing was really opened) and
    # admission continues.
    assert answers[:room] == [None] * room
    assert counter.listings <= 1 + (len(answers) - room)
    assert all(a is None for a in answers)


def test_fd_admission_refuses_on_an_exact_count():
    counter = FdCounter(refresh_s=3600, near_refresh_s=0.0)
    admit = fd_admission(open_fds() + 64, counter)  # reserve (64) is all that is left: refuse
    assert admit() == "fd_limit"
    assert admit() == "fd_limit"


def test_malloc_trim_and_rss_reported(console):
    assert memory.rss_bytes() > 10 << 20
    if memory._LIBC is not None:  # glibc: arenas and mmap threshold set; trimming after freeing works
        assert memory.tune_malloc()
        blocks = [bytearray(4096) for _ in range(20_000)]
        del blocks
        memory.trim()
    text = httpx.get(console.url + "/metrics", verify=console.ssl_context(),
                     auth=(console.admin_user, console.admin_password)).text  # fmt: skip
    m = re.search(r"^garrison_process_resident_bytes (\S+)$", text, re.M)
    assert m and float(m.group(1)) > 10 << 20


def test_group_commit_answers_only_after_the_transaction_and_shares_it():
    import threading

    from garrison.console.services.group_commit import GroupCommit

    release = threading.Event()
    calls: list[list[int]] = []

    def apply(items):
        calls.append(list(items))
        release.wait(30)  # the "transaction" is still running
        return [i * 10 for i in items]

    async def scenario():
        gc = GroupCommit(apply, max_weight=100)
        futs = [asyncio.ensure_future(gc.submit(i)) for i in range(50)]
        while not calls:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        done_before = [f.done() for f in futs]
        release.set()
        results = await asyncio.gather(*futs)
        return done_before, results, gc.groups

    done_before, results, groups = asyncio.run(scenario())
    assert not any(done_before)  # nobody is answered (acked) while the commit runs
    assert results == [i * 10 for i in range(50)]
    assert groups <= 2 and sum(len(c) for c in calls) == 50  # 50 callers, one or two transactions


def test_group_commit_failure_reaches_every_caller():
    from garrison.console.services.group_commit import GroupCommit

    def apply(items):
        raise RuntimeError("database is locked")

    async def scenario():
        gc = GroupCommit(apply)
        return await asyncio.gather(*(gc.submit(i) for i in range(5)), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(scenario()))


def test_connects_and_disconnects_grouped_in_order(store: Store):
    from garrison.console.services.group_commit import GroupCommit

    ids = [store.defenders.register(f"cg{i}", f"{i + 10:02d}" * 32, {}, None) for i in range(3)]

    async def scenario():
        gc = GroupCommit(store.defenders.connection_changes)
        # the same defender drops and comes back within one group: the last change wins
        return await asyncio.gather(
            gc.submit((ids[0], {"version": "a", "app_name": "cg"})),
            gc.submit((ids[1], {"version": "b"})),
            gc.submit((ids[0], None)),
            gc.submit((ids[0], {"version": "c"})),
            gc.submit((ids[2], {"version": "d"})),
            gc.submit((ids[2], None)),
        )

    results = asyncio.run(scenario())
    assert results[0]["app_name"] == "cg" and results[2] is None and results[3]["app_name"] == "cg"
    got = {i: store.defenders.get(i) for i in ids}
    assert got[ids[0]]["connected"] is True and got[ids[0]]["version"] == "c"
    assert got[ids[1]]["connected"] is True
    assert got[ids[2]]["connected"] is False and got[ids[2]]["version"] == "d"
