"""The contract between the defender channel server (garrison.channel) and the console's store.

The channel speaks WebSocket/TLS and the protocol; the console implements this backend with its
services and SQL store. Keeping it a Protocol lets the channel be exercised against the real console
and lets the console stay ignorant of framing, acks and sequence numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from garrison.channel.protocol import AppIdentity, DefenderType, Workloads
from garrison.policy.audit import AuditEvent
from garrison.policy.model import RuntimePolicy


class EnrolmentRefused(Exception):
    """Bad, revoked or replayed enrolment credential; the message is safe to show the defender."""


@dataclass
class DefenderHello:
    defender_id: str
    app_id: str = ""
    app_name: str = ""
    org: str = ""
    space: str = ""
    app_guid: str = ""
    instance: int = 0
    version: str = ""
    hostname: str = ""
    kernel: dict[str, Any] = field(default_factory=dict)
    """kernel features the defender found (seccomp notify, landlock ABI, pidfd_getfd, ...)"""
    remote_addr: str = ""


class ChannelBackend(Protocol):
    async def enrol(
        self,
        token: str,
        nonce: str,
        timestamp: float,
        csr_pem: bytes,
        requested_id: str,
        identity: AppIdentity | None = None,
        defender_type: DefenderType = "app-embedded",
    ) -> tuple[str, bytes]:
        """Check the bundle's enrolment token (and that nonce was never seen, timestamp fresh, the
        claimed app identity inside the token's scope); return (defender_id, client certificate PEM)
        signed by the console CA. Raise EnrolmentRefused otherwise. An id is never issued for a key
        other than the one it was first issued for. A `cell` defender needs a bundle made for cells
        (and a cell bundle enrols nothing else)."""
        ...

    async def workloads(self, defender_id: str, msg: Workloads) -> str:
        """Record a cell defender's containers (each one workload); returns why it was refused ("" =
        stored), e.g. the defender is not a cell defender."""
        ...

    async def defender_connected(self, hello: DefenderHello) -> AppIdentity | None:
        """Record the connection; return the app identity bound to this defender (events are stamped
        with it, whatever they or the hello claim), or None to use the hello's."""
        ...

    async def defender_disconnected(self, defender_id: str) -> None: ...

    async def heartbeat(self, defender_id: str, stats: dict[str, Any]) -> None: ...

    async def current_policy(self) -> RuntimePolicy:
        """The whole runtime policy with its revision; the defender selects its rule itself (and the
        channel may also pre-select per defender)."""
        ...

    async def store_events(self, defender_id: str, events: Sequence[AuditEvent]) -> int:
        """Persist a batch idempotently (duplicate event ids ignored). Returns how many were new."""
        ...

    async def droplet_verdict(self, digest: str, app_guid: str) -> dict[str, Any]:
        """Assurance verdict for a droplet (content digest) staged for an app (CF app guid): {digest,
        verdict: pass|fail|unknown, effect, reasons}. Answered in the first policy snapshot so the
        defender can refuse a non-compliant droplet; another app's verdict never answers."""
        ...

    async def is_revoked(self, defender_id: str) -> bool:
        """True once the defender was deleted by an operator: its certificate no longer admits it."""
        ...
