"""The cell defender: one privileged process per Diego cell protecting every app container on it.

Threads: discovery (containers appearing and disappearing, their CF identity, nftables tables, pids
limits, privileges), the exec gate (fanotify permission events, answered from the shared policy
evaluator), the network log (NFLOG from every container's namespace) and, with forensics on, the
proc connector. Every decision produces the same audit event an app-embedded defender sends."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from garrison.cell import exec_gate, forkrate, listening, network, pids, privileges
from garrison.cell.containers import (
    RUNC_ROOTS,
    Container,
    Mount,
    exec_mounts,
    find_app_processes,
    list_containers,
)
from garrison.cell.dns import ContainerResolver
from garrison.cell.exec_cache import Cached, VerdictCache, runs_interpreter
from garrison.cell.fdkeeper import KeeperLink
from garrison.cell.forensics import ForensicLog, process_facts
from garrison.cell.learning import WorkloadLearner, parent_exe
from garrison.channel.protocol import MAX_WORKLOADS, ProfileReport, Workload, Workloads
from garrison.defender.execinfo import is_loader
from garrison.defender.net.dns_proxy import Upstream, resolv_conf_upstreams
from garrison.defender.net.portscan import PortScanTracker
from garrison.kernel import memfd, nftset
from garrison.kernel.exec_watch import EV_MAPPED_DRIFT, EV_MEMFD_RUN, EV_MFD_EXEC, ExecWatch, WatchEvent
from garrison.kernel.exec_watch import unavailable as exec_watch_unavailable
from garrison.kernel.fanotify import FanotifyPerm, PermEvent, native_responder
from garrison.kernel.inotify import Inotify
from garrison.kernel.netns import socket_in_netns
from garrison.kernel.nflog import LoggedPacket, NflogSocket
from garrison.kernel.proc_connector import ProcConnector
from garrison.kernel.sock_diag import NETLINK_SOCK_DIAG
from garrison.policy.audit import AuditEvent
from garrison.policy.evaluate import Decision, decide_bind, decide_fork, decide_privileges
from garrison.policy.learning import view_learning
from garrison.policy.model import Rule, RuntimePolicy
from garrison.policy.scope import Identity, select_rule

log = logging.getLogger("garrison.cell")
DISCOVERY_INTERVAL_S = 0.2
FAST_DISCOVERY_S = 0.02
LISTEN_EVERY_TICKS = 5
"""listening sockets are read once a second (a report; under prevent nftables refuses inbound at once)"""


@dataclass
class _Tracked:
    container: Container
    rule: Rule | None = None
    pids_path: Path | None = None
    pids_refused: int = 0
    limit: int | None = None
    net_script: str | None = None
    privileges_reported: set[str] = field(default_factory=set)
    nflog: NflogSocket | None = None
    exec_gated: bool = False
    resolver: ContainerResolver | None = None
    net_checked: bool = False
    listening: list[str] = field(default_factory=list)  # "tcp/8080", ...
    diag: socket.socket | None = None  # sock_diag socket in the container's netns (listening ports)
    listen_audited: set[tuple[str, int]] = field(default_factory=set)
    reported: Workload | None = None  # as the console last heard of it
    mounts: dict[int, Mount] = field(default_factory=dict)  # marked mounts other than the root, by id
    memfd_scope: int = 0  # vm.memfd_noexec set in the container's pid namespace
    forks: forkrate.ForkRate = field(default_factory=forkrate.ForkRate)
    learner: WorkloadLearner | None = None  # while (or since) a control of its rule learns
    counting: bool = False  # our table counts new flows per destination (network learns)
    nft: socket.socket | None = None  # netfilter netlink socket in its netns (reads those counts)
    flow_counts: dict[tuple[str, str, int], int] = field(default_factory=dict)  # as last read


def _identity(c: Container) -> Identity:
    h = c.identity
    if h is None:
        return Identity(app_id=c.id)
    return Identity(app_id=h.app_id, app_name=h.app_name, org=h.org, space=h.space, app_guid=h.app_guid,
                    instance=h.instance)


class CellDefender:
    def __init__(
        self, policy: RuntimePolicy, emit: Callable[[AuditEvent], None], *,
        roots: Iterable[str] = RUNC_ROOTS, host: str | None = None, forensics: ForensicLog | None = None,
        dns_upstreams: list[Upstream] | None = None, exec_responder: str = "native",
        keeper: KeeperLink | None = None, exec_watch: bool = True,
    ) -> None:
        """`dns_upstreams`: where the containers' resolver forwards allowed names (default: the cell's
        resolv.conf, which is what Garden gives containers). `exec_responder`: "native" answers execs
        from a verdict cache in a native thread (Python decides files it does not know), "python"
        answers every exec in Python (also the fallback where the extension is not built). `keeper`:
        fail-closed exec gate, the group kept open by a keeper process while this defender is down.
        `exec_watch`: code run without an exec (memfd executables, libraries mapped executable) seen
        from the kernel (BPF tracepoints) where it can."""
        self.dns_upstreams = dns_upstreams if dns_upstreams is not None else resolv_conf_upstreams()
        self.policy = policy
        self.emit = emit
        self.roots = tuple(roots)
        self.host = host or socket.gethostname()
        self.keeper = keeper
        adopted = keeper.take() if keeper is not None else None
        self.gate = FanotifyPerm.adopt(adopted) if adopted is not None else FanotifyPerm(report_tid=True)
        self.orphans_refused = (self.gate.refuse_orphans(_max_fd()) if adopted is not None else 0)
        """execs a predecessor took from the kept group and never answered (refused at takeover)"""
        if keeper is not None and adopted is None:
            keeper.keep(self.gate.fd)
        self._native, self.exec_responder_note = (
            native_responder(self.gate) if exec_responder == "native" else (None, "python (as chosen)"))
        self._verdicts = VerdictCache(self._native) if self._native is not None else None
        self.exec_responder = "native" if self._native is not None else "python"
        # one pairing table for both responders: a program answered natively pairs with an interpreter
        # Python decides, and the other way round
        self._pairing: exec_gate.Pairing = (self._native if self._native is not None
                                            else exec_gate.InterpreterPairing())
        self._tracked: dict[str, _Tracked] = {}
        self._by_dev: dict[int, _Tracked] = {}
        self._by_mnt: dict[int, _Tracked] = {}  # mount id -> container, for execs from its other mounts
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()  # stops the exec gate
        self._net_r, self._net_w = os.pipe()  # wakes the netlog loop (new sockets, stop)
        os.set_blocking(self._net_r, False)
        self._threads: list[threading.Thread] = []
        self._scans = PortScanTracker()  # keyed by container init pid
        self.forensics = forensics
        self._by_pidns: dict[str, _Tracked] = {}
        self._by_mntns: dict[int, _Tracked] = {}  # mount namespace inode -> container (memfd reports)
        self._watch: ExecWatch | None = None
        self._watch_note = "off (as chosen)" if not exec_watch else exec_watch_unavailable()
        if self._watch_note is None:
            try:
                self._watch = ExecWatch(self._watch_event)
            except OSError as exc:
                self._watch_note = str(exc)
        self.on_workloads: Callable[[Workloads], None] | None = None
        """called (under the defender's lock, so in order) with containers appearing, changing and
        gone: the console link sends them on at once"""
        self._procs: ProcConnector | None = None
        self._ticks = 0  # discovery passes
        self.on_profile: Callable[[ProfileReport], bool] | None = None
        """sends a learning report (the console link); without it nothing is learnt (alert view only)"""
        self.profile_connects: Callable[[], int] | None = None
        """how many times the link connected: every container's whole profile is re-sent after each"""
        self.profile_interval = 60.0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.discover()
        if self._native is not None:
            self._native.start()
        if self.keeper is not None:
            self._defender_audit("cell.exec_fail_closed", "low" if self.orphans_refused == 0 else "high",
                                 f"exec gate fail-closed: execs are held up to {self.keeper.grace_s:g}s while the "
                                 "defender is down" + (f"; took the gate back from the keeper and refused "
                                 f"{self.orphans_refused} exec(s) held when the previous defender died"
                                 if self.orphans_refused else ""))
        self._defender_audit("cell.exec_responder", "low",
                             "execs answered natively from a verdict cache (files it does not know decided in "
                             "Python)" if self._native is not None
                             else f"execs answered in Python: {self.exec_responder_note}")
        self._defender_audit("cell.exec_watch", "low" if self._watch is not None else "medium",
                             "code run without an exec seen from the kernel (BPF tracepoints: memfd executables; "
                             "files changed after the app started mmap'd executable, refused under drift "
                             "prevention)" if self._watch is not None
                             else f"code run without an exec not seen from the kernel: {self._watch_note} (memfd "
                             "executables are still refused by vm.memfd_noexec under drift prevention, without an "
                             "audit; dropped libraries mapped executable are not refused)")
        if self._watch is not None:
            self._thread(self._watch_loop, "cell-exec-watch")
        loops = [(self._discovery_loop, "cell-discovery"), (self._exec_loop, "cell-exec-gate"),
                 (self._netlog_loop, "cell-netlog"), (self._profile_loop, "cell-profiles")]
        for target, name in loops:
            self._thread(target, name)
        self._watch_processes()

    def _thread(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _watch_processes(self) -> None:
        """The proc connector, once forensics or a fork-rate guard needs it (every fork, exec and exit on
        the cell passes through it, so not before)."""
        rate = any(r.processes.fork_bomb_guard is not None and r.processes.effect != "disable"
                   for r in self.policy.rules)
        if self._procs is None and (self.forensics is not None or rate) and not self._stop.is_set():
            self._procs = ProcConnector()
            self._thread(self._proc_loop, "cell-processes")

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        os.write(self._net_w, b"x")
        for t in self._threads:
            t.join(5)
        if self._native is not None:
            self._native.stop()  # before the group's fd closes: the native thread reads it
        self.gate.close()
        if self.keeper is not None:
            self.keeper.close()  # the keeper holds the group for its grace (a restart takes it back)  # held execs are released (allowed) by the kernel when the group closes
        if self._procs is not None:
            self._procs.close()
        if self._watch is not None:
            self._watch.close()
        for fd in (self._wake_r, self._wake_w, self._net_r, self._net_w):
            os.close(fd)
        self._read_execs()
        for tr in self._tracked.values():
            self._read_flows(tr)
        _flush([tr.learner for tr in self._tracked.values()])  # the last counts, while the link is up
        for tr in self._tracked.values():
            if tr.nft is not None:
                tr.nft.close()
            if tr.nflog is not None:
                tr.nflog.close()
            if tr.resolver is not None:
                tr.resolver.stop()
            if tr.diag is not None:
                tr.diag.close()

    def set_policy(self, policy: RuntimePolicy) -> None:
        """A new policy (a push from the console): every running container gets its rule again."""
        with self._lock:
            self.policy = policy
            for tr in self._tracked.values():
                self._apply_rule(tr)
                tr.listen_audited.clear()  # judged again under the new rule
                if tr.container.identity is not None:
                    self._check_privileges(tr)
                    self._check_listening(tr)
            self._report(list(self._tracked.values()), [])
        self._watch_processes()

    def workloads(self) -> list[Workloads]:
        """Every container as the console should see it (a full list, sent on each connection)."""
        with self._lock:
            items = [self._workload(tr) for tr in self._tracked.values()]
            for tr, wl in zip(self._tracked.values(), items, strict=True):
                tr.reported = wl
        return [Workloads(full=True, up=items[:MAX_WORKLOADS])]

    def _workload(self, tr: _Tracked) -> Workload:
        c, h = tr.container, tr.container.identity
        on = [name for name, flag in (("exec", tr.exec_gated), ("network", tr.net_script not in (None, "host")),
                                      ("dns", tr.resolver is not None),
                                      ("pids", tr.limit is not None)) if flag]
        ident = {"app_id": h.app_id, "app_name": h.app_name, "org": h.org, "space": h.space,
                 "app_guid": h.app_guid, "instance": h.instance} if h else {}
        return Workload(container_id=c.id[:256], rule=tr.rule.name if tr.rule else "", protections=on,
                        listening=tr.listening,
                        started_at=c.app_started, seen_at=tr.reported.seen_at if tr.reported else 0.0, **ident)

    def _report(self, changed: list[_Tracked], gone: list[str]) -> None:
        """Tell the console about containers that appeared, changed (identity, rule, protections) or
        stopped; unchanged ones are not re-sent."""
        if self.on_workloads is None:
            return
        now = time.time()
        up = []
        for tr in changed:
            wl = self._workload(tr)
            if tr.reported is not None and wl.model_copy(update={"seen_at": 0.0}) == tr.reported.model_copy(
                    update={"seen_at": 0.0}):
                continue
            tr.reported = wl = wl.model_copy(update={"seen_at": now})
            up.append(wl)
        for i in range(0, max(len(up), len(gone)), MAX_WORKLOADS):
            try:
                self.on_workloads(Workloads(up=up[i:i + MAX_WORKLOADS], gone=gone[i:i + MAX_WORKLOADS]))
            except Exception:
                log.exception("workload report not sent")

    def exec_stats(self) -> dict[str, int]:
        """The native responder's counts (execs answered natively, handed to Python, files cached);
        {} when Python answers every exec."""
        return self._native.stats() if self._native is not None else {}

    def containers(self) -> list[Container]:
        with self._lock:
            return [t.container for t in self._tracked.values()]

    # -- discovery -------------------------------------------------------------------------------
    def _discovery_loop(self) -> None:
        """A round every 200 ms, and every 20 ms for half a second after runc touches one of its
        roots (inotify: a container being created), so a new container is held within tens of ms."""
        watch: Inotify | None = None
        with contextlib.suppress(OSError):
            watch = Inotify()
            for root in self.roots:
                if os.path.isdir(root):
                    watch.watch_dir(root)
        fast_until = last_full = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                timeout = FAST_DISCOVERY_S if now < fast_until else DISCOVERY_INTERVAL_S
                if watch is not None:
                    ready, _, _ = select.select([watch.fd], [], [], timeout)
                    if ready:
                        with contextlib.suppress(BlockingIOError):
                            os.read(watch.fd, 65536)  # what changed does not matter: look again
                        fast_until = time.monotonic() + 0.5
                elif self._stop.wait(timeout):
                    return
                full = time.monotonic() - last_full >= DISCOVERY_INTERVAL_S
                try:
                    self.discover(apps=full)
                except Exception:  # one bad container must not stop protection of the others
                    log.exception("container discovery failed")
                if full:
                    last_full = time.monotonic()
        finally:
            if watch is not None:
                watch.close()

    def discover(self, *, apps: bool = True) -> None:
        """One round: containers gone and new (new ones get the exec gate at once); with `apps`, also
        the app processes of containers still waiting for theirs (a pass over /proc), pids limits,
        listening ports and the console report."""
        with self._lock:
            known = {cid: tr.container.init_pid for cid, tr in self._tracked.items()}
        found = list_containers(self.roots, known)
        ended: list[WorkloadLearner | None] = []
        with self._lock:
            gone = sorted(k for k in self._tracked if found.get(k, "gone") is not None)  # gone, or id reused
            if gone:
                self._read_execs()  # while the gone containers' cache entries still say whose they are
            for cid in gone:
                tr = self._tracked.pop(cid)
                ended.append(tr.learner)
                if tr.container.layers:
                    self._by_dev.pop(tr.container.layers.dev, None)
                    if self._verdicts is not None:
                        self._verdicts.forget(tr.container.layers.dev, gone=True)
                for mnt_id in tr.mounts:  # the marks went with the mounts
                    self._by_mnt.pop(mnt_id, None)
                if tr.nflog is not None:
                    tr.nflog.close()
                    tr.nflog = None
                    self._nudge()
                if tr.resolver is not None:
                    tr.resolver.stop()
                    tr.resolver = None
                if tr.diag is not None:
                    tr.diag.close()
                    tr.diag = None
                self._read_flows(tr)  # our socket keeps its namespace (and the counts) alive until now
                if tr.nft is not None:
                    tr.nft.close()
                    tr.nft = None
                for ns in [k for k, v in self._by_pidns.items() if v is tr]:
                    del self._by_pidns[ns]
                for mnt in [k for k, v in self._by_mntns.items() if v is tr]:
                    del self._by_mntns[mnt]
                    if self._watch is not None:
                        self._watch.unwatch(mnt)
                self._info(tr, "container_gone", f"container {tr.container.name} stopped")
            # one found by the first round may carry a table a previous run left (checked once)
            new = [self._tracked.setdefault(cid, _Tracked(container=c, net_checked=self._ticks > 0))
                   for cid, c in found.items() if c is not None]
            gated = [tr for tr in new if self._gate(tr)]
            for tr in gated:
                self._protect(tr)
            if not apps and (gone or new):
                self._report(list(self._tracked.values()), [g[:256] for g in gone if g not in found])
            waiting = [tr.container for tr in self._tracked.values() if apps and tr.container.identity is None]
        _flush(ended)  # a stopped container's last counts (outside the lock: a send may wait)
        if not apps:
            return
        started = find_app_processes(waiting) if waiting else {}  # one pass over /proc, outside the lock
        with self._lock:
            for cid, app in started.items():
                tr = self._tracked.get(cid)
                if tr is None or tr.container.identity is not None:
                    continue
                tr.container.app_pid, tr.container.identity, tr.container.app_started = app
                self._mark_mounts(tr)  # anything Garden mounted in since creation
                self._apply_rule(tr)
                self._info(tr, "container_protected", f"app {tr.container.name} started; rule "
                           f"{tr.rule.name if tr.rule else '(none)'}")
                self._check_privileges(tr)
            for tr in self._tracked.values():
                self._check_pids(tr)
                if self._ticks % LISTEN_EVERY_TICKS == 0:
                    self._check_listening(tr)
                    self._read_flows(tr)
            if self._ticks % LISTEN_EVERY_TICKS == 0:
                self._read_execs()
            self._ticks += 1
            self._report(list(self._tracked.values()), [g[:256] for g in gone if g not in found])

    def _check_listening(self, tr: _Tracked) -> None:
        """The container's listening ports: reported with its workload, and each one the rule's
        listening-port control objects to audited once while it listens (under prevent nftables
        already refuses new inbound connections to it)."""
        c = tr.container
        if c.identity is None or _shares_cell_ns(c, "net") is not False:
            return  # a container in the cell's namespace would report the cell's own listeners
        if tr.diag is None:
            with contextlib.suppress(OSError):  # no sock_diag: the /proc tables (slower) instead
                tr.diag = socket_in_netns(f"/proc/{c.init_pid}/ns/net", socket.AF_NETLINK, socket.SOCK_RAW,
                                          NETLINK_SOCK_DIAG)
                tr.diag.settimeout(1.0)  # a dump that never ends falls back to /proc
        found = listening.listeners(c.init_pid, tr.diag)
        if found is None:
            return
        own = tr.resolver.port if tr.resolver is not None else None
        now = {x for x in found if not (x.port == own and x.address in ("127.0.0.1", "::1"))}
        tr.listening = sorted({x.label for x in now})[:256]
        for x in sorted(now):
            if (x.protocol, x.port) in tr.listen_audited:
                continue
            tr.listen_audited.add((x.protocol, x.port))
            if tr.learner is not None:
                tr.learner.listen(x.port, x.protocol)  # once each time it starts listening
            d = decide_bind(tr.rule, x.port)
            if d.audited:
                self._audit(tr, type="network", effect=d.effect, severity="high", control=d.control,
                            dest_ip=x.address, dest_port=x.port, protocol=x.protocol,
                            message=f"{c.name} listens on {x.protocol} {x.address}:{x.port}: {d.reason}"
                                    + ("; new inbound connections refused" if d.blocked else ""))
        tr.listen_audited &= {(x.protocol, x.port) for x in now}  # closed and opened again: audited again

    def _gate(self, tr: _Tracked) -> bool:
        """The exec gate on a new container's file systems: cheap, done for every container of a round
        before anything slower (nftables, sysctls), so a burst of new containers is held at once."""
        c = tr.container
        if c.layers is None:
            self._info(tr, "container_unprotected",
                       f"container {c.id}: root {c.rootfs} is not an overlay mount; exec checks off", "high")
            return False
        try:
            self.gate.mark_filesystem(c.rootfs)
        except OSError as exc:
            self._info(tr, "container_unprotected", f"container {c.id}: exec gate not set: {exc}", "high")
            return False
        if self._verdicts is not None:  # a device number an earlier container had
            self._verdicts.forget(c.layers.dev, gone=True)
        self._by_dev[c.layers.dev] = tr
        tr.exec_gated = True
        self._mark_mounts(tr)
        with contextlib.suppress(OSError):
            self._by_pidns[os.readlink(f"/proc/{c.init_pid}/ns/pid")] = tr
        self._watch_container(tr)
        self._info(tr, "container_watched", f"container {c.id}: exec gate on (overlay root and "
                   f"{len(tr.mounts)} other mount(s))")
        return True

    def _watch_container(self, tr: _Tracked) -> None:
        """The kernel watch on this container (keyed by its mount namespace, never the cell's own): memfd
        executables at once; drift of mapped files once its app has started (`_apply_watch`)."""
        if self._watch is None:
            return
        try:
            mnt = os.stat(f"/proc/{tr.container.init_pid}/ns/mnt").st_ino
            if mnt == os.stat("/proc/self/ns/mnt").st_ino:
                return
            self._watch.watch(mnt)
        except OSError as exc:
            self._info(tr, "container_unprotected", f"code run without an exec in {tr.container.name} not seen: "
                       f"{exc}", "medium")
            return
        self._by_mntns[mnt] = tr

    def _apply_watch(self, tr: _Tracked) -> None:
        """Files mapped executable whose data changed after the app started are drift: refused (the
        caller killed in the call) under prevention, reported under alert."""
        if self._watch is None:
            return
        pc = tr.rule.processes if tr.rule else None
        drift = pc is not None and pc.effect != "disable" and pc.drift_prevention and tr.container.app_started
        for mnt in [k for k, v in self._by_mntns.items() if v is tr]:
            start_ns = int(tr.container.app_started * 1e9) if drift and tr.container.app_started else 0
            with contextlib.suppress(OSError):
                self._watch.watch(mnt, app_start_ns=start_ns, deny=bool(drift) and pc is not None
                                  and pc.effect == "prevent")

    def _watch_loop(self) -> None:
        watch = self._watch
        assert watch is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([watch.ring_fd, self._wake_r], [], [])
            if watch.ring_fd in ready:
                watch.consume()

    def _watch_event(self, ev: WatchEvent) -> None:
        """What the kernel saw: memfd_create(MFD_EXEC) where vm.memfd_noexec = 2 refused it (the kernel
        has no audit of its own that names the container), a program run from a memfd (nothing refused
        it: decided as drift by the rule, reported after the fact), or a file changed after the app
        started mapped executable (killed in the call under prevention)."""
        tr = self._by_mntns.get(ev.mntns)
        if tr is None or tr.rule is None:
            return
        extra: dict[str, object] = {"layer": "memfd"}
        if ev.kind == EV_MAPPED_DRIFT:
            exe = f"{ev.directory}/{ev.name}" if ev.directory not in ("", "/") else f"/{ev.name}"
            extra = {"layer": "mapped", "inode": ev.ino, "mapped_by": ev.comm}
            self._audit(tr, type="drift", effect="prevent" if ev.killed else "alert", severity="high",
                        control="processes.drift_prevention", pid=ev.pid, exe=exe, extra=extra,
                        message=f"{ev.name} (written or changed after the app started) mapped executable by "
                                f"{ev.comm} (LD_PRELOAD, dlopen)" + (": the process was killed in the call, before "
                                                                      "any of it ran" if ev.killed else ""))
            return
        exe = f"/{ev.name}" if ev.kind == EV_MEMFD_RUN else f"/memfd:{ev.name}"  # as /proc/<pid>/exe shows it
        if ev.kind == EV_MFD_EXEC:
            if tr.memfd_scope != 2:
                return  # not refused: what matters is whether it runs (reported then)
            self._audit(tr, type="drift", effect="prevent", severity="high", control="processes.drift_prevention",
                        message=f"memfd_create(MFD_EXEC) refused by vm.memfd_noexec=2: an executable in memory "
                                f"only ({ev.comm})", pid=ev.pid, exe=exe, extra=extra)
            return
        decision = exec_gate.decide(tr.rule, tr.container, exec_gate.ExecFacts(exe, "memfd", 0))
        if decision.audited:
            self._audit(tr, type="drift" if decision.control == "processes.drift_prevention" else "process",
                        effect="alert", severity="high", control=decision.control,
                        message=f"{decision.reason} (run from a memfd by {ev.comm}; seen by the kernel after it "
                                "started, nothing refused it here)", pid=ev.pid, exe=exe, extra=extra)

    def _protect(self, tr: _Tracked) -> None:
        """The rest of a new container's protection: its pids cgroup and its rule's controls."""
        tr.pids_path = pids.pids_dir(tr.container.cgroup)
        self._apply_rule(tr)

    def _mark_mounts(self, tr: _Tracked) -> None:
        """Hold execs from the container's other mounts too (a tmpfs /dev, bind mounts): one mount
        mark each, reached through the container's root, so the cell's own use of a shared file
        system is never held."""
        c = tr.container
        for m in exec_mounts(c.init_pid):
            if m.mnt_id in tr.mounts:
                continue
            try:
                self.gate.mark_mount(f"/proc/{c.init_pid}/root{m.point}")
            except OSError as exc:
                self._info(tr, "container_unprotected",
                           f"container {c.id}: execs from {m.point} ({m.fstype}) not gated: {exc}", "high")
                continue
            tr.mounts[m.mnt_id] = m
            self._by_mnt[m.mnt_id] = tr

    def _apply_rule(self, tr: _Tracked) -> None:
        tr.rule = select_rule(self.policy, _identity(tr.container))
        self._apply_learning(tr)
        if self._verdicts is not None and tr.container.layers is not None:
            self._verdicts.forget(tr.container.layers.dev)  # decided again under this rule and start time
        self._apply_network(tr)
        self._apply_memfd(tr)
        self._apply_watch(tr)
        guard = tr.rule.processes.fork_bomb_guard if tr.rule and tr.rule.processes.effect != "disable" else None
        path = tr.pids_path
        if guard is not None and path is not None and tr.limit != guard.max_procs:
            try:
                pids.set_max(path, guard.max_procs)
                tr.limit = guard.max_procs
                tr.pids_refused = pids.refusals(path)
            except OSError as exc:
                self._info(tr, "pids_limit_failed", f"pids.max not set for {tr.container.name}: {exc}", "high")

    def _apply_learning(self, tr: _Tracked) -> None:
        """A learner for a container whose rule learns (once its CF identity is known and there is a
        console to report to); kept when learning ends, so its last counts still go."""
        learning = view_learning(tr.rule)
        if tr.learner is None and learning and tr.container.identity is not None and self.on_profile is not None:
            tr.learner = WorkloadLearner(tr.container, self.on_profile, self.profile_connects)
            if tr.resolver is not None:
                tr.learner.recorder.names_for = tr.resolver.pins.names_for
        if tr.learner is not None:
            tr.learner.set_rule(tr.rule)

    def _learns(self, tr: _Tracked, control: str) -> bool:
        return tr.learner is not None and control in tr.learner.controls

    def _profile_loop(self) -> None:
        """Every container's learning report, every `profile_interval` seconds."""
        while not self._stop.wait(self.profile_interval):
            with self._lock:
                self._read_execs()
                for tr in self._tracked.values():
                    self._read_flows(tr)
                learners = [tr.learner for tr in self._tracked.values()]
            _flush(learners)

    def _read_execs(self) -> None:
        """Execs the native responder answered and counted while the processes are learnt (each with
        the argv and parent it read from the waiting thread), into their containers' learners."""
        if self._verdicts is None:
            return
        try:
            rows = self._verdicts.learned()
        except Exception:
            log.exception("learned execs")
            return
        for entry, argv, parent, count in rows:
            tr = entry.owner
            if isinstance(tr, _Tracked) and tr.learner is not None:
                tr.learner.exec(entry.facts.program, argv, parent, count)

    def _read_flows(self, tr: _Tracked) -> None:
        """New flows the kernel counted per destination since the last read, into the learner (a
        netlink dump of our table's sets: nothing per flow reaches user space). Called once a second,
        before the table is replaced (which starts the counts again) and when the container is gone."""
        if not tr.counting or tr.learner is None:
            return
        try:
            if tr.nft is None:
                tr.nft = nftset.open_socket(f"/proc/{tr.container.init_pid}/ns/net")
            now = network.learned_flows(tr.nft)
        except OSError:
            return
        t, old = time.time(), tr.flow_counts
        rows = [(ip, port, proto, n - old.get((ip, proto, port), 0), t, t)
                for (ip, proto, port), n in now.items() if n > old.get((ip, proto, port), 0)]
        tr.flow_counts = now
        if rows:
            tr.learner.flows(rows)

    def _apply_memfd(self, tr: _Tracked) -> None:
        """Under drift prevention no memfd can be made executable in the container (vm.memfd_noexec =
        2 in its pid namespace): an executable that was never a file on a marked mount cannot run.
        The container cannot lower it (runc and Garden mount /proc/sys read-only)."""
        pc = tr.rule.processes if tr.rule else None
        want = 2 if pc is not None and pc.effect == "prevent" and pc.drift_prevention else 0
        if want == tr.memfd_scope:
            return
        shared = _shares_cell_ns(tr.container, "pid")
        if shared is None:
            return
        if shared:  # the sysctl would hold for the whole cell
            if want and tr.memfd_scope != -1:
                tr.memfd_scope = -1
                self._info(tr, "container_unprotected", f"container {tr.container.name} shares the cell's PID "
                           "namespace: memfd executables are not refused", "high")
            return
        try:
            memfd.set_noexec_scope(tr.container.init_pid, want)
            tr.memfd_scope = want
        except (OSError, RuntimeError) as exc:
            self._info(tr, "container_unprotected", f"memfd execs in {tr.container.name} not refused: {exc}", "high")

    def _apply_network(self, tr: _Tracked) -> None:
        """Our nftables table in the container's network namespace (outbound rules, DNS steered to the
        defender's resolver for the container), replaced when the rule changes."""
        rule, c = tr.rule, tr.container
        net_on = rule is not None and rule.network.effect != "disable"
        dns_on = rule is not None and rule.dns.effect != "disable" and bool(rule.dns.allow or rule.dns.deny)
        dns_on = dns_on or self._learns(tr, "dns") or self._learns(tr, "network")  # names, and a destination's
        shares_host = _shares_cell_ns(c, "net")
        if shares_host is None:
            return
        if shares_host:
            if (net_on or dns_on) and tr.net_script != "host":
                tr.net_script = "host"
                self._info(tr, "network_unprotected", f"container {c.name} shares the cell's network "
                           "namespace: outbound and DNS rules are not applied (they would hold the cell)", "high")
            return
        self._apply_resolver(tr, dns_on)
        counting = self._learns(tr, "network")
        want = (network.ruleset(rule.network, log_flows=self.forensics is not None, dns=rule.dns,
                                dns_port=tr.resolver.port if tr.resolver else None, count_flows=counting)
                if rule is not None and (net_on or tr.resolver is not None) else None)
        if tr.net_checked and (want == tr.net_script or (want is None and tr.net_script is None)):
            return
        tr.net_checked = True  # the first time, a table a previous run left is cleared if unwanted
        try:
            self._read_flows(tr)  # the counts so far: replacing the table starts them again
            network.apply(c.init_pid, want or network.clear_script())
            tr.counting, tr.flow_counts = bool(want) and counting, {}
            if want and tr.nflog is None:
                tr.nflog = NflogSocket(network.NFLOG_GROUP, f"/proc/{c.init_pid}/ns/net")
                self._nudge()
        except (OSError, RuntimeError) as exc:
            if want is None:  # nothing to enforce: only a leftover table could not be cleared
                log.warning("clearing the table of %s: %s", c.name, exc)
                return
            self._info(tr, "network_unprotected", f"outbound rules not applied to {c.name}: {exc}", "high")
            return
        tr.net_script = want

    def _apply_resolver(self, tr: _Tracked, on: bool) -> None:
        """The defender's resolver for the container (its sockets in the container's namespace)."""
        if not on:
            if tr.resolver is not None:
                tr.resolver.stop()
                tr.resolver = None
            return
        if tr.resolver is not None:
            return

        def audit(name: str, decision: Decision, _client: object) -> None:
            self._audit(tr, type="dns", effect="prevent" if decision.blocked else "alert", control=decision.control,
                        dest_name=name[:512], protocol="dns", message=decision.reason)

        def query(name: str, _client: object) -> None:
            if tr.learner is not None:
                tr.learner.query(name)

        try:
            tr.resolver = ContainerResolver(tr.container.init_pid, lambda: tr.rule, audit, self.dns_upstreams,
                                            on_query=query)
            if tr.learner is not None:
                tr.learner.recorder.names_for = tr.resolver.pins.names_for
        except OSError as exc:
            self._info(tr, "dns_unprotected", f"DNS of {tr.container.name} not steered: {exc}", "high")

    def _nudge(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._net_w, b"n")

    def _netlog_loop(self) -> None:
        """Network decisions logged by nftables (NFLOG) in every container, as audits."""
        while not self._stop.is_set():
            with self._lock:
                socks = {t.nflog.fileno(): t for t in self._tracked.values() if t.nflog is not None}
            try:
                ready, _, _ = select.select([self._net_r, *socks], [], [], 1.0)
            except (OSError, ValueError):
                continue  # a socket closed meanwhile
            for fd in ready:
                if fd == self._net_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._net_r, 64)
                    continue
                tr = socks[fd]
                try:
                    packets = tr.nflog.read() if tr.nflog else []
                except OSError:
                    continue
                for pkt in packets:
                    self._net_audit(tr, pkt)

    def _net_audit(self, tr: _Tracked, pkt: LoggedPacket) -> None:
        parts = pkt.prefix.split("|")
        if len(parts) != 4 or parts[0] != "g" or tr.rule is None:
            return
        _g, effect, control, index = parts
        proto = {6: "tcp", 17: "udp"}.get(pkt.proto, str(pkt.proto))
        if effect == "flow":
            self._flow(tr, pkt, proto)
            return
        dest = f"{pkt.dst}:{pkt.dport}" if pkt.dport is not None else pkt.dst
        what = network.describe(tr.rule.network, control, int(index))
        kind = {"network.bad_reputation": "bad_reputation", "network.port_scan": "port_scan",
                "dns.allow": "dns"}.get(control, "network")
        way = "inbound" if control.startswith("network.listening") else "outbound"
        self._audit(tr, type=kind, effect=effect, severity="high", control=control, dest_ip=pkt.dst,
                    dest_port=pkt.dport, protocol=proto,
                    message=f"{way} {proto} to {dest}: {what}" + (" (refused)" if effect == "prevent" else ""))

    def _flow(self, tr: _Tracked, pkt: LoggedPacket, proto: str) -> None:
        """A new outbound flow: into the forensic trail; distinct destinations per window; a scan is
        audited once per crossing and, under prevent, the container's new flows are refused in the kernel
        for one window."""
        if self.forensics is not None:
            self.forensics.record(tr.container.id, "connect", dest_ip=pkt.dst, dest_port=pkt.dport, protocol=proto)
        rule = tr.rule
        cfg = rule.network.port_scan if rule else None
        if rule is None or cfg is None or not cfg.enabled or pkt.dport is None:
            return
        v = self._scans.record(tr.container.init_pid, pkt.dst, pkt.dport, cfg)
        if not v.first:
            return
        effect = rule.network.effect
        note = ""
        if effect == "prevent":
            try:
                network.block_new_flows(tr.container.init_pid, cfg.window_s)
                note = f"; new connections refused for {cfg.window_s:g}s"
            except RuntimeError as exc:
                note = f"; could not refuse new connections: {exc}"
        self._audit(tr, type="port_scan", effect=effect, severity="high", control="network.port_scan",
                    dest_ip=pkt.dst, dest_port=pkt.dport, protocol=proto,
                    message=f"{v.distinct} distinct destinations within {cfg.window_s:g}s "
                            f"(threshold {cfg.threshold}){note}")

    def _check_privileges(self, tr: _Tracked) -> None:
        """Privileges the rule does not allow: an audit each (once), and under prevent the container's
        processes are stopped."""
        seen = privileges.observe(tr.container)
        if seen is None:
            return
        decisions = [d for d in decide_privileges(tr.rule, seen) if d.reason not in tr.privileges_reported]
        if not decisions:
            return
        stopped = 0
        if any(d.blocked for d in decisions):
            procs = tr.pids_path / "cgroup.procs" if tr.pids_path is not None else None
            stopped = privileges.stop_processes(tr.container, procs)
        for d in decisions:
            tr.privileges_reported.add(d.reason)
            suffix = f"; {stopped} process(es) stopped" if d.blocked else ""
            self._audit(tr, type="privileges", effect=d.effect, severity="critical" if d.blocked else "high",
                        control=d.control, message=d.reason + suffix,
                        extra={"capabilities": sorted(seen.capabilities)})

    def _proc_loop(self) -> None:
        """fork/exec/exit of every process on the cell: those of a container go to its forensic trail
        and its fork rate."""
        procs = self._procs
        assert procs is not None
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([procs.fileno()], [], [], 0.5)
                events = procs.read() if ready else []
            except (OSError, ValueError):  # ENOBUFS: a burst overflowed the socket; go on reading
                if self._stop.is_set():
                    return
                continue
            for ev in events:
                if ev.kind == "exit":
                    continue
                ns = None
                for pid in (ev.pid, ev.ppid):  # a short-lived child may be gone: its parent tells
                    if pid:
                        with contextlib.suppress(OSError):
                            ns = os.readlink(f"/proc/{pid}/ns/pid")
                            break
                with self._lock:
                    tr = self._by_pidns.get(ns) if ns else None
                if tr is None:
                    continue
                if self.forensics is not None:
                    if ev.kind == "exec":
                        self.forensics.record(tr.container.id, "exec", pid=ev.pid, **process_facts(ev.pid))
                    else:
                        self.forensics.record(tr.container.id, "fork", pid=ev.pid, ppid=ev.ppid)
                if ev.kind == "fork":
                    try:
                        self._fork_rate(tr, ev.pid, ev.ppid or 0, forkrate.boottime_of(ev.timestamp_ns))
                    except Exception:  # one container's guard failing must not stop the others'
                        log.exception("fork-rate guard failed for %s", tr.container.id)

    def _fork_rate(self, tr: _Tracked, child: int, parent: int, when: float) -> None:
        """Forks over the last second against the rule's `max_forks_per_s` (the shared evaluator's
        decide_fork); once per window: an audit, and under prevent the burst stopped."""
        rule = tr.rule
        if rule is None or rule.processes.fork_bomb_guard is None:
            return
        rate = tr.forks.record(when, child, parent)
        now = forkrate.now()
        if now - tr.forks.tripped_at < tr.forks.window_s:
            return
        decision = decide_fork(rule, forks_last_second=rate, live_procs=None)
        if not decision.violation:
            return
        tr.forks.trip(now)
        stopped, offenders = self._stop_burst(tr, kill=decision.effect == "prevent")
        note = f"; container frozen, {stopped} process(es) of the burst killed, thawed" if stopped else ""
        self._audit(tr, type="fork_bomb", effect=decision.effect, severity="high", control=decision.control,
                    message=f"{decision.reason} (proc connector){note}",
                    extra={"forks_last_second": rate, "offenders": offenders, "killed": stopped})

    def _stop_burst(self, tr: _Tracked, *, kill: bool) -> tuple[int, list[dict[str, object]]]:
        """Freeze the container (nothing can fork), find the burst's processes and their descendants,
        note who they are, kill them (prevent), thaw. Returns (killed, the top forking processes)."""
        c = tr.container
        parents = tr.forks.parents()
        frozen = forkrate.freezer_dir(c.cgroup)
        if kill and frozen is not None:
            forkrate.set_frozen(*frozen, True)
        try:
            offenders = [{"pid": pid, "forks": n, **process_facts(pid)} for pid, n in parents.most_common(3)]
            if not kill:
                return 0, offenders
            group = frozen[0] if frozen is not None else tr.pids_path
            members = forkrate.members(group) if group is not None else []
            spare = {c.init_pid, *([c.app_pid] if c.app_pid else [])}
            return forkrate.kill(forkrate.offending_subtree(members, tr.forks.burst_start, parents, spare)), offenders
        finally:
            if kill and frozen is not None:
                forkrate.set_frozen(*frozen, False)

    def _check_pids(self, tr: _Tracked) -> None:
        if tr.limit is None or tr.pids_path is None:
            return
        refused = pids.refusals(tr.pids_path)
        if refused > tr.pids_refused:
            n = refused - tr.pids_refused
            tr.pids_refused = refused
            rule = tr.rule
            effect = "prevent" if rule and rule.processes.effect == "prevent" else "alert"
            if effect == "prevent" and 0 < forkrate.now() - tr.forks.tripped_at < 10:
                # the burst's survivors spin at the cap, forking nothing the proc connector could count
                killed, _ = self._stop_burst(tr, kill=True)
                n_note = f"; {killed} process(es) of the fork burst killed" if killed else ""
            else:
                n_note = ""
            self._audit(tr, type="fork_bomb", effect=effect, severity="high", control="processes.fork_bomb_guard",
                        message=f"{n} fork(s) refused by the kernel: {tr.container.name} reached "
                                f"{tr.limit} processes (pids.max){n_note}")

    # -- exec gate -------------------------------------------------------------------------------
    def _exec_loop(self) -> None:
        if self._native is not None and not self._native_loop():
            return
        while not self._stop.is_set():  # the Python responder (chosen, or the native one failed)
            ready, _, _ = select.select([self.gate.fd, self._wake_r], [], [])
            if self.gate.fd not in ready:
                continue
            for ev in self.gate.read():
                self._answer(ev)

    def _native_loop(self) -> bool:
        """Events the native responder handed over (still held: answered first), then the reports of
        its own answers. True when it failed and Python must answer from now on."""
        native = self._native
        assert native is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([native.notify_fd, self._wake_r], [], [])
            if native.notify_fd not in ready:
                continue
            misses, records, dropped, error = native.take()
            for fd, tid, mask, paired in misses:
                self._answer(PermEvent(mask=mask, fd=fd, pid=tid, paired=None if paired < 0 else bool(paired)))
            for cookie, tid, allowed in records:
                self._native_answered(cookie, tid, bool(allowed))
            if dropped:
                log.warning("%d native exec reports dropped (ring full)", dropped)
                self._defender_audit("cell.exec_reports_dropped", "high", f"{dropped} exec(s) answered natively "
                                     "were not reported (report ring full): audits/forensics missing for them")
            if error:
                native.stop()
                self._defender_audit("cell.exec_responder", "high", f"native exec responder stopped "
                                     f"({os.strerror(error)}): execs answered in Python from now on")
                return True
        return False

    def _native_answered(self, cookie: int, tid: int, allowed: bool) -> None:
        assert self._verdicts is not None
        cached = self._verdicts.lookup(cookie)
        if cached is not None:
            self._after_answer(cached.owner, cached.facts, cached.decision, tid, allowed)  # type: ignore[arg-type]

    def _owner(self, fd: int, dev: int) -> tuple[_Tracked | None, Mount | None]:
        """The container an exec'd file belongs to: by its overlay's device, else by the mount the
        file was reached through. Lock-free (single dict reads; discovery replaces entries whole), so
        a held exec never waits for a discovery round over hundreds of containers."""
        tr = self._by_dev.get(dev)
        if tr is not None or not self._by_mnt:
            return tr, None
        mnt_id = _mount_id(fd)
        tr = self._by_mnt.get(mnt_id) if mnt_id is not None else None
        return tr, (tr.mounts.get(mnt_id) if tr is not None and mnt_id is not None else None)

    def _facts(self, tr: _Tracked, mount: Mount | None, ev: PermEvent) -> exec_gate.ExecFacts:
        facts = (exec_gate.identify_on_mount(tr.container, mount, ev.fd) if mount is not None
                 else exec_gate.identify(tr.container, ev.fd))
        if not is_loader(facts.path):
            return facts
        if ev.paired if ev.paired is not None else self._pairing.is_interpreter(ev.pid):
            return facts
        return exec_gate.unpaired_loader(facts, ev.pid)

    def _answer(self, ev: PermEvent) -> None:
        """Answer first (the exec waits for it), audit after; a decision that depends only on the file
        and the rule is cached for the native responder (also while the container's processes are
        learnt: the native side then reads each exec's argv and parent itself and counts them)."""
        allow, tr, decision, facts, cache, learnt = True, None, None, None, None, None
        generation = self._verdicts.generation() if self._verdicts is not None else 0
        try:
            st = os.fstat(ev.fd)
            tr, mount = self._owner(ev.fd, st.st_dev)
            rule = tr.rule if tr else None
            if tr is not None and (rule is not None or self.forensics is not None):
                facts = self._facts(tr, mount, ev)
            if tr is not None and rule is not None and facts is not None:
                decision = exec_gate.decide(rule, tr.container, facts)
                allow = not decision.blocked
            if tr is not None and allow and facts is not None and facts.loaded is None:
                self._pairing.program_exec(ev.pid)  # its interpreter, if any, is opened next
            learning = tr is not None and self._learns(tr, "processes")
            if allow and facts is not None and learning:
                learnt = _held_exec(facts, ev.pid)  # read while the thread waits for the answer
            if (self._verdicts is not None and tr is not None and mount is None and facts is not None
                    and facts.loaded is None and facts.layer != "unknown" and tr.container.app_started is not None):
                loader = is_loader(facts.path)
                cache = (st, loader, allow and not loader and runs_interpreter(ev.fd))
        except Exception:  # never leave an exec hanging: decide by the rule's effect
            log.exception("exec decision failed")
            allow = not (tr is not None and tr.rule is not None and tr.rule.processes.effect == "prevent")
            cache = None
        finally:
            with contextlib.suppress(OSError):
                self.gate.answer(ev, allow)
        if learnt is not None and tr is not None and tr.learner is not None:
            tr.learner.exec(*learnt)
        if cache is not None and tr is not None and facts is not None and self._verdicts is not None:
            st, loader, interp = cache
            record = self.forensics is not None or (decision is not None and decision.audited)
            self._verdicts.remember(st, facts.path, allow=allow, loader=loader, interp=interp, record=record,
                                    entry=Cached(tr, facts, decision), generation=generation,
                                    learn=self._learns(tr, "processes") and not loader)
        if tr is not None and facts is not None:
            self._after_answer(tr, facts, decision, ev.pid, allow)

    def _after_answer(self, tr: _Tracked, facts: exec_gate.ExecFacts, decision: Decision | None, pid: int,
                      allow: bool) -> None:
        """The forensic record and the audit of one answered exec (answered here or natively)."""
        if self.forensics is not None:
            # the file that ran, recorded even when the process is gone at once
            self.forensics.record(tr.container.id, "exec_file", pid=pid, exe=facts.path, layer=facts.layer,
                                  allowed=allow, **({"loaded": facts.loaded, "argv": facts.argv} if facts.loaded else {}))
        if decision is not None and decision.audited:
            kind = "drift" if decision.control == "processes.drift_prevention" else "process"
            extra: dict[str, object] = {"layer": facts.layer, "inode": facts.ino}
            message = decision.reason
            if facts.loaded is not None:
                extra.update(loader=facts.path, argv=facts.argv)
                message += f" (run through the dynamic loader {facts.path}, which maps it past the exec check)"
            self._audit(tr, type=kind, effect=decision.effect, severity="high", control=decision.control,
                        message=message, pid=pid, exe=facts.program, extra=extra)

    # -- audits ----------------------------------------------------------------------------------
    def _audit(self, tr: _Tracked, **fields: object) -> None:
        c = tr.container
        h = c.identity
        extra = {"container": c.id, "cell": self.host, **dict(fields.pop("extra", {}) or {})}  # type: ignore[call-overload]
        ev = AuditEvent(
            defender_id=f"cell:{self.host}", app_id=(h.app_guid or h.app_id) if h else c.id,
            app_name=h.app_name if h else "", org=h.org if h else "", space=h.space if h else "",
            instance=h.instance if h else 0, rule=tr.rule.name if tr.rule else "", extra=extra,
            **fields,  # type: ignore[arg-type]
        )
        try:
            self.emit(ev)
        except Exception:
            log.exception("audit not delivered")

    def _defender_audit(self, control: str, severity: str, message: str) -> None:
        """An audit about the cell defender itself (no container)."""
        with contextlib.suppress(Exception):
            self.emit(AuditEvent(defender_id=f"cell:{self.host}", type="defender", effect="info",
                                 severity=severity, control=control, message=message,  # type: ignore[arg-type]
                                 extra={"cell": self.host}))

    def _info(self, tr: _Tracked, action: str, message: str, severity: str = "low") -> None:
        self._audit(tr, type="defender", effect="info", severity=severity, control=f"cell.{action}",
                    message=message)


def _held_exec(facts: exec_gate.ExecFacts, tid: int) -> tuple[str, list[str], str] | None:
    """(program, argv, parent executable) of a held exec for the profile; None for the interpreter
    the kernel opens for a program (the program itself was recorded)."""
    if facts.loaded is None and is_loader(facts.path):
        return None
    argv = facts.argv if facts.argv is not None else exec_gate.held_execve(tid)[1]
    return facts.program, argv, parent_exe(tid)


def _flush(learners: Iterable[WorkloadLearner | None]) -> None:
    for learner in learners:
        if learner is None:
            continue
        try:
            learner.flush()
        except Exception:  # one container's report must not stop the others'
            log.exception("profile report failed")


def _max_fd() -> int:
    """The fd numbers a predecessor (same binary, same limits) could have had: the kernel hands out the
    lowest free number, and 65,536 open files is far beyond what a cell defender holds (a few per
    container), so the sweep at takeover stays ~0.1 s whatever the limit."""
    return min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1 << 16)


def _mount_id(fd: int) -> int | None:
    """The id of the mount an open file was reached through (fdinfo's mnt_id)."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _shares_cell_ns(c: Container, kind: str) -> bool | None:
    """Is the container in the cell's own namespace of this kind (None: the container is gone)?"""
    try:
        return os.readlink(f"/proc/{c.init_pid}/ns/{kind}") == os.readlink(f"/proc/self/ns/{kind}")
    except OSError:
        return None
