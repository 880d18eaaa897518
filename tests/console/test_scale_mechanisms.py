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
    if memory._LIBC is not None:  # glibc: trimming after freeing a big heap gives pages back
        blocks = [bytearray(4096) for _ in range(20_000)]
        del blocks
        memory.trim()
    text = httpx.get(console.url + "/metrics", verify=console.ssl_context(),
                     auth=(console.admin_user, console.admin_password)).text  # fmt: skip
    m = re.search(r"^garrison_process_resident_bytes (\S+)$", text, re.M)
    assert m and float(m.group(1)) > 10 << 20
