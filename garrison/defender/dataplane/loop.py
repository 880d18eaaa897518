"""NativeDataplane: runs the C notification loop for one listener and keeps Python as the control plane.

Python's jobs here: compile the rule into tables and swap them on every policy push, run the
notifications the loop hands over through the same dispatcher the pure-Python data plane uses, and
turn the loop's decision records into the same audit events and forensic lines the network guard
writes (batched, off the app's path).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from garrison.defender.dataplane import tables
from garrison.defender.execinfo import MAX_ARG_BYTES, MAX_ARGS, ExecTarget
from garrison.defender.notify import Notification, ProcInfo, SupervisorContext
from garrison.defender.proctree import UserTasks
from garrison.policy.audit import AuditEvent
from garrison.policy.evaluate import Decision
from garrison.policy.model import Rule

log = logging.getLogger(__name__)

REC_NET, REC_AUDIT, REC_EXEC, REC_FORK, REC_CHILD = 1, 2, 3, 4, 5
LINES_NET, LINES_PROC, LINES_LEARN_NET = 1, 2, 4
_FORK_NAMES = {56: "clone", 57: "fork", 58: "vfork"}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_EFFECT_NAMES = {1: "alert", 2: "prevent"}
_GUARD_COUNTERS = ("emulated", "continued", "refused")


def _stop_can_kill(rule: Rule | None) -> bool:
    """ProcessControls.check_exec_stop kills only under a rule whose process effect is prevent."""
    return rule is not None and rule.processes.effect == "prevent"


@dataclass(frozen=True)
class _Pid:
    """What NetworkGuard._audit needs of a notification that Python never saw: the pid and the
    identity the loop read from /proc while the process still waited for its answer."""

    pid: int
    info: ProcInfo | None = None


def _proc_info(pid: int, blob: bytes) -> ProcInfo | None:
    """'ppid\\0exe\\0cwd\\0cmdline' as captured by the loop."""
    if not blob:
        return None
    parts = blob.split(b"\0", 3)
    if len(parts) < 4:
        return None
    ppid, exe, cwd, cmdline = parts
    info = ProcInfo(pid=pid, ppid=int(ppid) if ppid.lstrip(b"-").isdigit() and int(ppid) >= 0 else None)
    info.exe = exe.decode(errors="replace") or None
    info.cwd = cwd.decode(errors="replace") or None
    info.argv = [a.decode(errors="replace") for a in cmdline.split(b"\0")[:-1]][:256]
    return info


class NativeDataplane:
    """One native loop on `listener`; `dispatch(notification)` decides what the loop hands over."""

    def __init__(
        self,
        listener: int,
        ctx: SupervisorContext,
        dispatch: Callable[[Notification], None],
        guard: Any = None,
        *,
        threads: int = 3,
        ring_slots: int = 8192,
        hold_records: threading.Event | None = None,
    ) -> None:
        from garrison.defender.dataplane import _native  # type: ignore[attr-defined]

        self.listener = listener
        self.ctx = ctx
        self.dispatch = dispatch
        self.guard = guard
        self.threads = threads
        self._loop = _native.Loop(listener, ring_slots)
        self._tracer: Any = None  # the native exec tracer, where the ptrace exec stop runs
        self._compiled: OrderedDict[int, tables.Compiled] = OrderedDict()
        self._rule: Rule | None = None
        self._current: tables.Compiled | None = None
        self._pins_seen = 0
        self._emulate = False
        self._swap_lock = threading.Lock()
        self._seen = {k: 0 for k in _GUARD_COUNTERS}
        self._dropped = 0
        self._stopped = threading.Event()
        self._workers: list[threading.Thread] = []
        self.handed_over = 0
        self.drain_cpu_s = 0.0
        """CPU time of the record drain thread so far (where learning's counting runs: bench/defender_learn.py)"""
        # while set, records stay in the ring (lets a test fill it; the app must never notice)
        self.hold_records = hold_records or threading.Event()

    # -- control plane -------------------------------------------------------------------------------
    def _emulate_now(self) -> bool:
        g = self.guard
        return bool(g is not None and g.emulate and getattr(g, "_getfd_ok", False))

    def update(self, rule: Rule | None = None) -> None:
        """Compile the current rule and swap the loop's tables (the loop never waits for this)."""
        with self._swap_lock:
            rule = self.ctx.rule() if rule is None else rule
            emulate = self._emulate_now()
            try:
                compiled = tables.compile_rule(rule, emulate=emulate)
            except Exception:  # never keep the old rule's tables: let Python decide everything
                log.exception("data plane: rule not compiled; every notification goes to Python")
                compiled = tables.handoff_all(rule)
            if rule is not self._rule:
                self._loop.clear_execs()  # exec verdicts are the old rule's (before the new tables)
                if self._tracer is not None:
                    self._tracer.clear()
            if self._tracer is not None:
                self._tracer.set_mode(_stop_can_kill(rule))
            fb = rule.processes.fork_bomb_guard if rule is not None else None
            self._loop.set_fork_guard(*((fb.max_forks_per_s, fb.max_procs) if fb is not None else (0, 0)))
            self._rule, self._emulate, self._current = rule, emulate, compiled
            self._install(compiled)

    def _install(self, compiled: tables.Compiled) -> None:
        """Swap in `compiled` plus the resolver's current pins (caller holds the swap lock)."""
        pins = getattr(self.guard, "pins", None)
        version = getattr(pins, "version", 0)
        snapshot = pins.snapshot() if pins is not None and hasattr(pins, "snapshot") else None
        gen = self._loop.set_tables(tables.with_pins(compiled, snapshot))
        self._pins_seen = version
        self._compiled[gen] = compiled  # records name their generation: audits find their rule
        while len(self._compiled) > 1024:
            self._compiled.popitem(last=False)

    def _refresh_pins(self) -> None:
        """New answers from the resolver proxy: a connect to them need not go to Python."""
        pins = getattr(self.guard, "pins", None)
        if pins is None or getattr(pins, "version", 0) == self._pins_seen:
            return
        with self._swap_lock:
            if self._current is not None and self._current.flags & tables.F_DNS_ALLOW:
                self._install(self._current)
            else:
                self._pins_seen = pins.version

    def start(self, *, drain: bool = True) -> None:
        """Start the loop and the hand-over threads (they wait without the GIL). `drain=False`: the
        caller starts the record drain later with start_drain(), after it has forked the app: a
        thread waiting for the GIL at the instant of a raw clone leaves CPython's GIL switch request
        set in the child, whose first GIL release then waits forever for a switch (seen once)."""
        self.update(self.ctx.rule())
        listeners = getattr(self.ctx, "policy_listeners", None)
        if isinstance(listeners, list):
            listeners.append(self.update)
        if hasattr(self.ctx, "dataplane"):
            self.ctx.dataplane = self  # the process controls teach the exec cache and the fork guard
        self._loop.start()
        for i in range(self.threads):
            t = threading.Thread(target=self._handoff, name=f"garrison-dp-py-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        if drain:
            self.start_drain()

    def start_drain(self) -> None:
        if any(t.name == "garrison-dp-drain" for t in self._workers):
            return
        t = threading.Thread(target=self._drain, name="garrison-dp-drain", daemon=True)
        t.start()
        self._workers.append(t)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._loop.stop()
        for t in self._workers:
            t.join(timeout=5)
        self._process(self._loop.drain(1 << 20, 0, self._lines()))
        self._feed_learned()
        self._merge_stats()
        listeners = getattr(self.ctx, "policy_listeners", None)
        if isinstance(listeners, list):
            with contextlib.suppress(ValueError):
                listeners.remove(self.update)

    def remember_exec(self, rule: Rule | None, target: ExecTarget) -> bool:
        """The process controls let `target` through under `rule` with nothing to audit: the loop may
        answer the same exec (same path, argv and resolved file, the file unchanged) itself until the
        rule changes. Only plain files named by an absolute path (no script, loader or memfd: their
        verdict depends on more than the file), and argv Python read whole."""
        st = target.st
        if (
            st is None
            or not target.raw_path.startswith("/")
            or target.via_loader
            or target.via_script
            or target.memfd
            or target.error
            or target.fd_head.startswith(b"#!")
            or len(target.argv) >= MAX_ARGS
            or any(len(a) >= MAX_ARG_BYTES - 1 for a in (target.raw_path, *target.argv))
        ):
            return False
        enc = os.fsencode
        argv = b"".join(enc(a) + b"\0" for a in target.argv)
        with self._swap_lock:
            if rule is not self._rule or self._stopped.is_set():
                return False  # decided under a rule the loop no longer holds
            key = (enc(target.raw_path), enc(target.exe), argv)
            facts = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
            return bool(self._loop.remember_exec(*key, *facts))

    @property
    def loop(self) -> Any:
        return self._loop

    def attach_tracer(self, tracer: Any) -> None:
        """The native exec tracer (dataplane/tracer.py): its verdicts and mode follow the rule."""
        with self._swap_lock:
            self._tracer = tracer
            tracer.set_mode(_stop_can_kill(self._rule))

    def remember_exec_stop(self, rule: Rule | None, exe: str, cmdline: bytes, st: os.stat_result) -> bool:
        """check_exec_stop let this exec go on under `rule` (it audits only what it kills): the native
        tracer lets the same stop (exe path, cmdline bytes, the unchanged file) go on itself until
        the rule changes."""
        with self._swap_lock:
            if self._tracer is None or rule is not self._rule or self._stopped.is_set():
                return False
            facts = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
            return bool(self._tracer.remember(os.fsencode(exe), cmdline, *facts))

    def forks_seen(self) -> int:
        """Fork notifications the loop has counted (read before counting the tree, for fork_counted)."""
        return int(self._loop.forks_seen())

    def fork_counted(self, live: int | None, seen_then: int, tasks: UserTasks) -> None:
        """What the fork-bomb guard just measured, for the loop's own checks: the tree's live processes
        (with the fork being allowed) when forks_seen() was `seen_then`, and the user's task count."""
        if live is not None:
            self._loop.fork_tree(live, seen_then)
        count, at = tasks.snapshot()
        self._loop.fork_tasks(count, at, tasks.limit or 0)

    def stats(self) -> dict[str, int]:
        out = dict(self._loop.stats())
        if self._tracer is not None:
            out.update(self._tracer.stats())
        return out

    # -- handed-over notifications ------------------------------------------------------------------
    def _handoff(self) -> None:
        loop, listener = self._loop, self.listener
        while True:
            try:
                item = loop.take(-1)
            except EOFError:
                return
            if item is None:
                continue
            notif_id, tid, nr, args, fork_rate, count_tree = item
            self.handed_over += 1
            n = Notification(listener, notif_id, tid, nr, args)
            if fork_rate >= 0:  # a fork under the guard: the loop's count decides, not Python's own
                n.fork_rate, n.count_tree = fork_rate, bool(count_tree)
            try:
                self.dispatch(n)
            except Exception:  # the dispatcher answers for failed handlers; this is a last resort
                log.exception("data plane: dispatch failed")

    # -- records → audits and forensic lines ---------------------------------------------------------
    def _drain(self) -> None:
        start = time.thread_time()
        while not self._stopped.is_set():
            self.drain_cpu_s = time.thread_time() - start
            if self.hold_records.is_set():
                self._stopped.wait(0.05)
                continue
            try:
                records = self._loop.drain(4096, 100, self._lines())
                self._process(records)
                self._feed_learned()
                self._merge_stats()
                if self.ctx.rule() is not self._rule or self._emulate_now() != self._emulate:
                    self.update()  # a context without policy listeners, or pidfd_getfd found refused
                self._refresh_pins()
            except Exception:
                log.exception("data plane: drain")
        self.drain_cpu_s = time.thread_time() - start

    def _lines_sink(self) -> Callable[[str], None] | None:
        """Where the loop's own forensic lines go: the context's ring, when it takes formatted lines."""
        return getattr(self.ctx, "record_lines", None)

    def _lines(self) -> int:
        """Which records the loop formats as forensic lines itself: allowed destinations where there
        is a guard (whose record() calls these lines replace), also counted per destination while
        the network is learned (_feed_learned); execs, forks and the tracer's children unless the
        processes are being learned (the profile observes those records one by one)."""
        if self._lines_sink() is None:
            return 0
        controls = self._learning()
        net = 0 if self.guard is None else LINES_NET | (LINES_LEARN_NET if "network" in controls else 0)
        return net | (0 if "processes" in controls else LINES_PROC)

    def _learning(self) -> frozenset[str]:
        profile = getattr(self.ctx, "profile", None)
        return frozenset(profile.controls or ()) if profile is not None else frozenset()

    def _feed_learned(self) -> None:
        """The loop's per-destination counts since the last drain into the profile: learning costs
        Python one item per destination and drain, not one event per connect."""
        rows, dropped = self._loop.take_learned()
        profile = getattr(self.ctx, "profile", None)
        if (rows or dropped) and profile is not None:
            protos = tables.PROTO_NAMES
            profile.observe_destinations(
                [(ip, port, protos.get(proto) or "", n, first, last) for ip, port, proto, n, first, last in rows],
                dropped,
            )

    def _process(self, records: list[tuple[Any, ...] | str]) -> None:
        g = self.guard
        sink = self._lines_sink()
        for item in records:
            if isinstance(item, str):  # a run of allowed destinations, already forensic lines
                if sink is not None:
                    with contextlib.suppress(Exception):
                        sink(item)
                continue
            self._process_one(g, item)

    def _process_one(self, g: Any, record: tuple[Any, ...]) -> None:
        (
            kind,
            pid,
            family,
            port,
            proto,
            control,
            entry,
            effect,
            _blocked,
            err_or_ppid,
            gen,
            addr,
            caddr,
            blob,
            when,
        ) = record
        if kind == REC_EXEC:
            self._exec_line(pid, err_or_ppid, blob, when)
            return
        if kind == REC_FORK:
            self._fork_line(pid, entry, control, err_or_ppid, when)
            return
        if kind == REC_CHILD:
            self._record("child", t=round(when, 6), pid=pid, child=entry)
            return
        ip = ipaddress.ip_address(addr)
        proto_name = tables.PROTO_NAMES.get(proto)
        if kind == REC_NET:
            if g is None:
                return
            t = round(when, 6)
            if proto_name is None:  # let through without emulation (nothing could object)
                g._record("net", t=t, pid=pid, dest_ip=str(ip), dest_port=port)
            else:
                g._record("net", t=t, pid=pid, dest_ip=str(ip), dest_port=port, protocol=proto_name, names=[])
            return
        compiled = self._compiled.get(gen)
        if kind != REC_AUDIT or g is None or compiled is None or family not in (4, 6):
            return
        info = _proc_info(pid, blob)
        cand = ipaddress.ip_address(caddr) if caddr else ip
        self._audit(
            g, compiled, _Pid(pid, info), (ip, cand, port), proto_name or "tcp", (control, entry, effect)
        )

    def _record(self, kind: str, **facts: Any) -> None:
        record = getattr(self.ctx, "record", None)
        if record is not None:
            with contextlib.suppress(Exception):
                record(kind, **facts)

    def _exec_line(self, pid: int, ppid: int, blob: bytes, when: float) -> None:
        """The forensic line of an exec the loop let through, where the loop did not format it (a
        name that is not ASCII, processes being learned); the loop read the thread group and parent
        before answering, like the Python handler. `when` is the loop's time of the decision (lines
        are drained in batches, up to 100 ms later)."""
        path, *argv = [p.decode(errors="replace") for p in blob.split(b"\0")[:-1]] or [""]
        self._record(
            "exec", t=round(when, 6), pid=pid, ppid=ppid if ppid >= 0 else None, exe=path,
            argv=argv[:32], loader=None, script=None, verdict="allow",
        )  # fmt: skip

    def _fork_line(self, pid: int, tid: int, nr: int, ppid: int, when: float) -> None:
        """The forensic line of a fork the loop let through: the thread group, the parent and the
        time as the loop saw them when it answered (the forker may be gone by now)."""
        self._record(
            "fork", t=round(when, 6), pid=pid, tid=tid, ppid=ppid if ppid >= 0 else None,
            syscall=_FORK_NAMES.get(nr, str(nr)), verdict="allow",
        )  # fmt: skip

    @staticmethod
    def _audit(
        g: Any,
        compiled: tables.Compiled,
        who: _Pid,
        where: tuple[IPAddress, IPAddress, int],
        proto: str,
        verdict: tuple[int, int, int],
    ) -> None:
        """The audit NetworkGuard._audit writes for this decision; the reason names the form of the
        destination that decided, in decide_connect's words."""
        from garrison.defender.net.normalise import Kind, Routed

        ip, cand, port = where
        control, entry, effect = verdict
        name = tables.CONTROLS.get(control, "")
        if name == "network.bad_reputation_ips":
            reason = f"{cand} is on the bad-reputation list"
        elif name == "network.outbound.deny":
            hit = compiled.entries[entry].cidr if entry < len(compiled.entries) else "?"
            reason = f"{cand}:{port}/{proto} matches deny {hit}"
        else:
            reason = f"{cand}:{port}/{proto} is not in the allowed list"
        decision = Decision(True, _EFFECT_NAMES.get(effect, "alert"), name, reason)  # type: ignore[arg-type]
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        written = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"  # canonical: as written
        g._audit(
            who, compiled.rule, decision, Routed(Kind.DEST, ip, port, family, written=written), proto, []
        )

    def _merge_stats(self) -> None:
        """The guard's counters (what tests and diagnostics read) include the native decisions."""
        s = self._loop.stats()
        g = self.guard
        if g is not None:
            with g._stats_lock:
                for k in _GUARD_COUNTERS:
                    g.stats[k] += s[k] - self._seen[k]
                    self._seen[k] = s[k]
        dropped = s["dropped"]
        if dropped > self._dropped:
            lost, self._dropped = dropped - self._dropped, dropped
            self.ctx.audit(
                AuditEvent(
                    type="defender",
                    effect="info",
                    severity="high",
                    control="dataplane.ring",
                    message=f"{lost} decision records dropped: the data plane's ring "
                    f"({s['ring_slots']} slots) was full; the app was never blocked by it",
                    extra={"dropped": lost, "dropped_total": dropped},
                )
            )
