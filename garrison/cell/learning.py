"""Learning per container on a cell: what each app container does, as the app-embedded defender's
recorder counts it, reported as the same `profile` message naming the container's workload.

Fed by what the cell defender already sees, nothing trapped per call: the exec gate (the file a held
execve runs, its argv from the waiting thread, the parent's executable), new outbound flows counted per
destination in the kernel (a dynamic nftables set with counters, read once a second: nothing per
connection reaches user space), the container's resolver (names
queried, and the names that resolved to a destination's address) and the listening-port check."""

from __future__ import annotations

import os
from collections.abc import Callable

from garrison.cell.containers import Container, environment
from garrison.channel import protocol as p
from garrison.defender.profile import ProfileRecorder, ProfileReporter, app_routes, instance_addresses
from garrison.policy.learning import view_learning
from garrison.policy.model import Rule


class WorkloadLearner:
    """One container's recorder and reporter (its own run id: counts are cumulative per container run)."""

    def __init__(self, container: Container, send: Callable[[p.ProfileReport], bool],
                 connects: Callable[[], int] | None = None) -> None:
        h = container.identity
        assert h is not None, "a container is learnt once its app (and CF identity) is known"
        self.recorder = ProfileRecorder(root=f"/proc/{container.init_pid}/root")
        env = environment(container.app_pid) if container.app_pid else None
        workload = p.ProfileWorkload(app_id=h.app_id, app_name=h.app_name, org=h.org, space=h.space,
                                     app_guid=h.app_guid, instance=h.instance, container_id=container.id[:256])
        self.reporter = ProfileReporter(self.recorder, send, addresses=instance_addresses(env or {}),
                                        routes=app_routes(env or {}), connects=connects, workload=workload)

    @property
    def controls(self) -> frozenset[str]:
        return self.recorder.controls

    def set_rule(self, rule: Rule | None) -> None:
        """`rule` as the cell enforces it (the enforcing view of a learning rule)."""
        self.recorder.set_controls(view_learning(rule))

    def exec(self, exe: str, argv: list[str], parent: str) -> None:
        self.recorder.observe_process(exe, argv, parent)

    def flows(self, rows: list[tuple[str, int, str, int, float, float]]) -> None:
        """New flows counted in the kernel: (ip, port, protocol, count, first, last) per destination."""
        self.recorder.observe_destinations(rows)

    def query(self, name: str) -> None:
        self.recorder.observe("dns", {"name": name})

    def listen(self, port: int, protocol: str) -> None:
        self.recorder.observe("listen", {"port": port, "protocol": protocol})

    def flush(self) -> None:
        self.reporter.flush()


def parent_exe(tid: int) -> str:
    """The executable of the parent of the process doing an exec, as the container sees it (the
    kernel gives a path from the container's root for a file of another mount namespace)."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            ppid = next((int(line.split()[1]) for line in f if line.startswith(b"PPid:")), 0)
        return os.readlink(f"/proc/{ppid}/exe")[:4096] if ppid > 0 else ""
    except (OSError, ValueError, IndexError):
        return ""
