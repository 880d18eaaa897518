"""The supervisor's state shared with every handler: current rule, identity, audits, forensics."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from garrison.defender.forensics import ForensicRing
from garrison.defender.notify import ProcInfo, read_proc
from garrison.defender.profile import ProfileRecorder
from garrison.kernel.features import KernelFeatures
from garrison.policy.audit import AuditEvent
from garrison.policy.learning import enforcing_view, learning_controls
from garrison.policy.model import Rule, RuntimePolicy
from garrison.policy.scope import Identity, select_rule_raw

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
        self.profile: ProfileRecorder | None = None
        """set while learning is possible: `record` feeds it (garrison/defender/profile.py)"""
        self.dataplane: Any = None
        """the native data plane while it runs: the process controls teach its exec cache and tell
        it what they counted for the fork-bomb guard (garrison/defender/dataplane/loop.py)"""

    def rule(self) -> Rule | None:
        return self._rule

    def set_policy(self, policy: RuntimePolicy) -> Rule | None:
        raw = select_rule_raw(policy, self.identity)
        rule = enforcing_view(raw) if raw is not None else None
        if self.profile is not None:
            self.profile.set_controls(learning_controls(raw))
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
        profile = self.profile
        if profile is not None and profile.controls:
            try:
                profile.observe(kind, facts)
            except Exception:  # learning must never disturb the decision path
                log.debug("profile observe failed", exc_info=True)

    def record_lines(self, lines: str) -> None:
        """Forensic lines already formatted (the native data plane writes its own "net" lines; while
        the network is learned it also counts their destinations itself: NativeDataplane._feed_learned)."""
        self.forensics.add_lines(lines)


class RateWindow:
    """Events in the last second, counted in 20 slots of 50 ms. A whole-second counter that weights
    the previous second by the time left in it underestimates a burst straddling a second boundary
    (60 forks spread over 0.9 s could read as 47): a fork bomb was then missed now and then. Here a
    burst shorter than 0.95 s is always counted whole; memory is fixed whatever the rate."""

    SLOTS = 20

    def __init__(self) -> None:
        self._counts = [0] * self.SLOTS
        self._newest = 0  # absolute index of the newest slot (time * SLOTS)
        self._total = 0
        self._lock = threading.Lock()

    def hit(self, now: float | None = None) -> float:
        slot = int((time.monotonic() if now is None else now) * self.SLOTS)
        with self._lock:
            gap = slot - self._newest
            if gap >= self.SLOTS:
                self._counts = [0] * self.SLOTS
                self._total = 0
            else:
                for s in range(self._newest + 1, slot + 1):  # slots that fell out of the window
                    self._total -= self._counts[s % self.SLOTS]
                    self._counts[s % self.SLOTS] = 0
            self._newest = max(self._newest, slot)
            self._counts[slot % self.SLOTS] += 1
            self._total += 1
            return float(self._total)
