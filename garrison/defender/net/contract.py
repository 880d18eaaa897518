"""The supervisor ↔ guard contract, as structural types.

The supervisor (garrison.defender.notify) owns the real classes; the guard only relies on this shape.
The standalone runner used by tests and the benchmark hands it the same Notification class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from garrison.defender.notify import NotificationGone
from garrison.policy.audit import AuditEvent
from garrison.policy.model import Rule

__all__ = ["GONE", "Handler", "Notification", "NotificationGone", "SupervisorContext"]


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
    def valid(self) -> bool: ...
    def get_fd(self, target_fd: int) -> int: ...
    def install_fd(self, fd: int, at: int, *, cloexec: bool = False) -> None: ...
    def reply_continue(self) -> None: ...
    def reply_error(self, errno: int) -> None: ...
    def reply_value(self, v: int) -> None: ...


class SupervisorContext(Protocol):
    def rule(self) -> Rule | None: ...
    def audit(self, event: AuditEvent) -> None: ...
    def proc(self, pid: int) -> Any: ...


Handler = Callable[[Any, Any], None]


# A notification that is no longer valid (its thread died or was interrupted): decide nothing on it.
GONE: tuple[type[BaseException], ...] = (NotificationGone,)
