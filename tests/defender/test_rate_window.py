"""The fork-rate guard's counter: events in the last second, whatever the alignment of a burst."""

from __future__ import annotations

from garrison.defender.context import RateWindow


def test_burst_straddling_a_second_boundary_is_counted_whole() -> None:
    w = RateWindow()
    times = [1000.5 + i * 0.015 for i in range(60)]  # 60 events over 0.885 s, across t = 1001.0
    rates = [w.hit(t) for t in times]
    assert rates[-1] == 60  # the whole-second estimate read ~47 here and missed a 50/s threshold


def test_old_events_leave_the_window() -> None:
    w = RateWindow()
    for i in range(100):
        w.hit(2000.0 + i * 0.001)
    assert w.hit(2000.6) == 101  # all within the last second
    assert w.hit(2001.2) == 2  # the 0.1 s burst is more than a second old; the 2000.6 hit is not
    assert w.hit(2005.0) == 1  # a long pause empties it
