"""The supervisor ↔ guard contract, as structural types.

The supervisor (garrison.defender.notify) owns the real classes; the guard only relies on this shape,
so it runs unchanged under the supervisor or the standalone runner used by tests and the benchmark.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from garrison.policy.audit import AuditEvent
from garrison.policy.model import Rule


class Notification(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def tid(self) -> int: ...
    @property
    def pid(self) -> int: ...
    @property
    def nr(self) -> int: ...
    @property
    def args(self) -> Sequence[int]: ...

    def read(self, addr: int, size: int) -> bytes: ...
    def get_fd(self, target_fd: int) -> int: ...
    def reply_continue(self) -> None: ...
    def reply_error(self, errno: int) -> None: ...
    def reply_value(self, v: int) -> None: ...


class SupervisorContext(Protocol):
    def rule(self) -> Rule | None: ...
    def audit(self, event: AuditEvent) -> None: ...
    def proc(self, pid: int) -> Any: ...


Handler = Callable[[Any, Any], None]


class _LocalGone(Exception):
    """Raised by the standalone runner when the notification is no longer valid."""


def _gone_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [_LocalGone]
    try:
        mod = importlib.import_module("garrison.defender.notify")
        cls = getattr(mod, "NotificationGone", None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            errs.append(cls)
    except ImportError:
        pass
    return tuple(errs)


LocalGone = _LocalGone
GONE: tuple[type[BaseException], ...] = _gone_errors()
