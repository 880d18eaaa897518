"""Notification.pid: the thread group of the trapping thread, from pidfd_open (leader) or /proc."""

from __future__ import annotations

import os
import threading

from garrison.defender.notify import Notification


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_pid_of_leader_and_of_a_worker_thread_and_no_fd_left_open() -> None:
    before = _open_fds()
    leader = Notification(-1, 1, os.getpid(), 0, (0,) * 6)
    assert leader.pid == os.getpid()

    tid: list[int] = []
    started, release = threading.Event(), threading.Event()

    def worker() -> None:
        tid.append(threading.get_native_id())
        started.set()
        release.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert started.wait(10)
        assert tid[0] != os.getpid()
        assert Notification(-1, 2, tid[0], 0, (0,) * 6).pid == os.getpid()  # not a leader: from /proc
    finally:
        release.set()
        t.join()
    leader.close()
    late = Notification(-1, 3, os.getpid(), 0, (0,) * 6)
    late._replied = True  # pid first asked after the reply: nothing may stay open
    assert late.pid == os.getpid()
    assert _open_fds() == before
