"""The supervisor's state shared with every handler: current rule, identity, audits, forensics."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from garrison.defender.forensics import ForensicRing
from garrison.defender.notify import ProcInfo, read_proc
from garrison.kernel.features import KernelFeatures
from garrison.policy.audit import AuditEvent
from garrison.policy.model import Rule, RuntimePolicy
from garrison.policy.scope import Identity, select_rule

log = logging.getLogger(__name__)

AuditSink = Callable[[AuditEvent], None]


class DefenderContext:
    """Implements notify.SupervisorContext. `set_policy` swaps the rule atomically (live updates)."""

    def __init__(
        self,
        identity: Identity,
        defender_id: str,
        features: KernelFeatures,
        forensics: ForensicRing,
        sinks: list[AuditSink] | None = None,
    ) -> None:
        self.identity = identity
        self.defender_id = defender_id
        self.features = features
        self.forensics = forensics
        self.sinks: list[AuditSink] = list(sinks or [])
        self.policy: RuntimePolicy | None = None
        self._rule: Rule | None = None
        self._lock = threading.Lock()
        self.policy_listeners: list[Callable[[Rule | None], None]] = []

    def rule(self) -> Rule | None:
        return self._rule

    def set_policy(self, policy: RuntimePolicy) -> Rule | None:
        rule = select_rule(policy, self.identity)
        with self._lock:
            self.policy = policy
            self._rule = rule
        for cb in self.policy_listeners:
            try:
                cb(rule)
            except Exception:  # a listener bug must not stop the update
                log.exception("policy listener failed")
        return rule

    def audit(self, event: AuditEvent) -> None:
        ident = self.identity
        upd: dict[str, object] = {}
        if not event.defender_id:
            upd["defender_id"] = self.defender_id
        if not event.app_id:
            upd["app_id"] = ident.app_id or ident.app_guid
        if not event.app_name:
            upd["app_name"] = ident.app_name
        if not event.org:
            upd["org"] = ident.org
        if not event.space:
            upd["space"] = ident.space
        if not event.instance:
            upd["instance"] = ident.instance
        if not event.rule and self._rule is not None:
            upd["rule"] = self._rule.name
        if upd:
            event = event.model_copy(update=upd)
        self.forensics.add("audit", **event.model_dump(exclude_none=True, exclude={"extra"}))
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:
                log.exception("audit sink failed")

    def proc(self, pid: int) -> ProcInfo:
        return read_proc(pid)

    def record(self, kind: str, **facts: object) -> None:
        self.forensics.add(kind, **facts)


class RateWindow:
    """Events per sliding second, cheap: counts in the current and previous whole second."""

    def __init__(self) -> None:
        self._sec = 0
        self._cur = 0
        self._prev = 0
        self._lock = threading.Lock()

    def hit(self) -> float:
        now = time.monotonic()
        sec = int(now)
        with self._lock:
            if sec != self._sec:
                self._prev = self._cur if sec == self._sec + 1 else 0
                self._cur = 0
                self._sec = sec
            self._cur += 1
            frac = now - sec
            return self._cur + self._prev * (1.0 - frac)
