"""The cell defender's link to the console: enrolled as a `cell` defender with the cell's host name,
policy pushes re-applied to every running container, audits spooled and sent like an app-embedded
defender's (each names its container's workload), and the containers reported as workloads."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from garrison import __version__
from garrison.channel.bundle import InstallBundle
from garrison.channel.client import DefenderChannelClient
from garrison.channel.policy_cache import ForeignPolicyCache, PolicyCacheError
from garrison.channel.protocol import Hello, Workloads
from garrison.policy.audit import AuditEvent
from garrison.policy.model import RuntimePolicy

log = logging.getLogger("garrison.cell.console")
RESTART_WAIT_S = 1.0
"""with a cached policy, how long a (re)start waits for the console before gating execs on the cache"""


class CellConsoleLink:
    def __init__(self, bundle: InstallBundle, data_folder: Path, host: str | None = None) -> None:
        self.host = (host or socket.gethostname())[:200]
        hello = Hello(defender_id=f"cell-{self.host}", version=__version__, hostname=self.host,
                      kernel={"defender_type": "cell"})
        data_folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_folder = data_folder
        self.client = DefenderChannelClient(bundle, data_folder, hello, defender_type="cell")
        self._cond = threading.Condition()
        self._latest: RuntimePolicy | None = None
        self._apply: Callable[[RuntimePolicy], None] = lambda _p: None

    def attach(self, defender: object) -> None:
        """Wire a CellDefender: policy pushes → set_policy; container changes → workload messages;
        every connection starts with the full list."""
        from garrison.cell.defender import CellDefender

        assert isinstance(defender, CellDefender)
        self._apply = defender.set_policy
        self.client.on_command = lambda name, args: self._command(defender, name, args)
        self.client.on_policy = self._pushed
        self.client.on_connect = defender.workloads
        defender.on_workloads = self.send_workloads
        defender.on_profile = self.client.send_now  # learning reports: a lost one heals with the next
        defender.profile_connects = lambda: int(self.client.stats.get("connects", 0))
        threading.Thread(target=self._applier, name="cell-policy", daemon=True).start()
        if self.client.policy is not None and self.client.policy is not defender.policy:
            self._pushed(0, self.client.policy)  # answered after the defender started on its cache

    @staticmethod
    def _command(defender: object, name: str, args: dict[str, Any]) -> Any:
        """The console's commands: `upload_forensics` of one container (`container`: its id) for the
        incident page's process tree."""
        from garrison.cell.defender import CellDefender
        from garrison.cell.forensics import container_records

        assert isinstance(defender, CellDefender)
        if name not in ("upload_forensics", "forensics"):
            raise ValueError(f"unknown command {name!r}")
        if defender.forensics is None:
            raise ValueError("this cell keeps no forensic trail (garrison defender cell --forensics-dir)")
        container = str(args.get("container") or "")
        if not container:
            raise ValueError("a cell holds many containers: name one (container)")
        return {"records": container_records(defender.forensics, container, int(args.get("max_bytes", 4 << 20)))}

    def _pushed(self, _revision: int, policy: RuntimePolicy) -> None:
        """Called on the channel's event loop: re-applying to hundreds of containers (an nft run each)
        happens on our own thread, newest policy first, so heartbeats and acks never wait for it."""
        with self._cond:
            self._latest = policy
            self._cond.notify()

    def _applier(self) -> None:
        while True:
            with self._cond:
                while self._latest is None:
                    self._cond.wait()
                policy, self._latest = self._latest, None
            try:
                self._apply(policy)
            except Exception:
                log.exception("policy not applied")

    def send_workloads(self, msg: Workloads) -> None:
        self.client.send_message(msg)

    def emit(self, ev: AuditEvent) -> None:
        self.client.submit(ev)

    def first_policy(self, timeout: float) -> tuple[RuntimePolicy | None, str]:
        """The console's policy (waiting up to `timeout`), else the cached one; (None, why) if neither.
        With a cached policy of this console (a restart) the wait is at most `RESTART_WAIT_S`: the
        running containers' execs are not gated until the defender starts, and the console's current
        policy replaces the cached one as soon as it answers (see `attach`)."""
        self.client.start()
        try:
            cached, unusable = self.client.cached_policy(), ""
        except (PolicyCacheError, ForeignPolicyCache) as exc:
            cached, unusable = None, str(exc)
        if self.client.wait_policy(min(timeout, RESTART_WAIT_S) if cached is not None else timeout) \
                and self.client.policy is not None:
            return self.client.policy, f"policy revision {self.client.policy.revision} from the console"
        why = self.client.unreachable_reason()
        if cached is not None:
            return cached, f"console not answering yet ({why}): cached policy revision {cached.revision} until it does"
        if unusable:
            return None, f"console unreachable ({why}); {unusable}"
        return None, f"console unreachable ({why}) and no cached policy"

    def stop(self) -> None:
        self.client.stop()
