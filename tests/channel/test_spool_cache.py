import stat
from pathlib import Path

import pytest

from garrison.channel.policy_cache import (
    CACHE_FILE,
    PolicyCacheError,
    load_cached_policy,
    save_cached_policy,
)
from garrison.channel.spool import EventSpool
from garrison.policy.audit import AuditEvent
from garrison.policy.model import Rule, RuntimePolicy


def _ev(i: int) -> AuditEvent:
    return AuditEvent(id=f"event-{i:04d}", type="process", effect="alert", message=str(i))


def test_spool_survives_reopen_and_acks_in_order(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    s = EventSpool(path)
    assert s.append([_ev(i) for i in range(5)]) == 5
    s.ack_through(2)
    s.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    s = EventSpool(path)
    assert [e.id for e in s.pending_events()] == ["event-0002", "event-0003", "event-0004"]
    # sequence numbers are never reused, so a late ack cannot delete newer events
    s.ack_through(5)
    assert s.append([_ev(9)]) == 6
    s.ack_through(5)
    assert s.pending() == 1
    s.close()


def test_spool_cap_drops_oldest_and_counts(tmp_path: Path) -> None:
    s = EventSpool(tmp_path / "s.sqlite", max_events=3)
    s.append([_ev(i) for i in range(5)])
    assert [e.id for e in s.pending_events()] == ["event-0002", "event-0003", "event-0004"]
    assert s.dropped == 2
    s.close()


def test_policy_cache(tmp_path: Path) -> None:
    assert load_cached_policy(tmp_path) is None
    pol = RuntimePolicy(rules=[Rule(name="a")], revision=4)
    path = save_cached_policy(tmp_path, pol)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_cached_policy(tmp_path) == pol
    (tmp_path / CACHE_FILE).write_text("{garbage")
    with pytest.raises(PolicyCacheError, match="corrupt"):
        load_cached_policy(tmp_path)
    (tmp_path / CACHE_FILE).write_text('{"rules": [{"nme": 1}]}')
    with pytest.raises(PolicyCacheError, match="invalid"):
        load_cached_policy(tmp_path)


def test_oversized_event_is_trimmed_not_lost(tmp_path: Path) -> None:
    s = EventSpool(tmp_path / "s.sqlite")
    huge = AuditEvent(id="huge-event", type="process", effect="alert", argv=["x" * 100_000] * 50)
    s.append([huge])
    (got,) = s.pending_events()
    assert got.id == "huge-event" and got.extra["truncated"] is True
    assert got.argv is not None and len(got.argv[0]) == 1024
    s.close()


def test_closed_spool_says_so(tmp_path: Path) -> None:
    from garrison.channel.spool import SpoolClosed

    s = EventSpool(tmp_path / "s.sqlite")
    s.close()
    with pytest.raises(SpoolClosed, match="was stopped"):
        s.append([_ev(1)])
