"""Polling for conditions that other processes make true (consoles, defenders, containers).

One helper instead of a copy per test file: the suite waits on real servers and real kernels,
never on fixed sleeps, and a timeout names what it waited for and what it saw last.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def until(pred: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
          interval: float = 0.05) -> Any:
    """Return pred()'s first truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {got!r}")
        time.sleep(interval)


async def until_async(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition",
                      interval: float = 0.01) -> Any:
    """`until` for tests that run on an event loop (the loop keeps serving while it waits)."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {got!r}")
        await asyncio.sleep(interval)
