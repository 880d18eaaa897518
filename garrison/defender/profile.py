"""Learning in the defender: what the app does, aggregated into counts and reported now and then.

The supervisor's forensic funnel (`DefenderContext.record`) already sees every exec, allowed
connect, DNS query and bind; while a control of the rule is in `learn` mode, the recorder counts
those facts by identity (executable + argv shape + parent; destination ip/port/protocol + the DNS
names that resolved to it; name; listening port) — a dict update, nothing sent per call. A reporter
thread sends what changed as `profile` messages (cumulative counts per run, so re-sending is
harmless), and the whole set now and then, so a report lost with a connection heals.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from garrison.channel import protocol as p

log = logging.getLogger(__name__)

MAX_ITEMS_PER_KIND = 4096
MAX_HASH_BYTES = 256 * 1024 * 1024
FULL_EVERY_S = 600.0
_NUM = re.compile(r"[-+]?\d+(\.\d+)?")
_HEX = re.compile(r"[0-9a-fA-F][0-9a-fA-F:-]{15,}")
_TMP = ("/tmp/", "/var/tmp/", "/dev/shm/", "/proc/")


def argv_shape(argv: list[str]) -> list[str]:
    """argv[1:] with what varies from run to run replaced: numbers `<n>`, long hex/uuids `<hex>`,
    temporary paths `<tmp>`, very long arguments `<long>`; `--opt=VALUE` keeps the option."""
    out: list[str] = []
    for arg in argv[1:17]:
        key, eq, value = arg.partition("=") if arg.startswith("-") else ("", "", arg)
        out.append(key + eq + _shape(value) if eq else _shape(arg))
    return out


def _shape(a: str) -> str:
    if _NUM.fullmatch(a):
        return "<n>"
    if _HEX.fullmatch(a):
        return "<hex>"
    if a.startswith(_TMP):
        return "<tmp>"
    if len(a) > 128:
        return "<long>"
    return a


def _real_exe(path: str) -> str:
    """The file an exec ran, as the policy's process lists see it (symlinks resolved); "" for a path
    that names nothing (a PATH search's misses reach the native loop's record too)."""
    if path.startswith("/memfd:") or not path.startswith("/"):
        return path if path.startswith("/memfd:") else ""
    real = os.path.realpath(path)
    return real[:4096] if os.path.isfile(real) else ""


def _exe_of(pid: object) -> str:
    if not isinstance(pid, int) or pid <= 0:
        return ""
    try:
        return os.readlink(f"/proc/{pid}/exe")[:4096]
    except OSError:
        return ""


class _Item:
    __slots__ = ("count", "facts", "first", "last")

    def __init__(self, facts: dict[str, Any], now: float) -> None:
        self.facts = facts
        self.count = 0
        self.first = now
        self.last = now


def _add_names(item: _Item, names: list[str]) -> None:
    """The resolver's names for a destination's address, at most 8 kept (caller holds the lock)."""
    known = item.facts["names"]
    for n in names:
        if n not in known and len(known) < 8:
            known.append(str(n)[:253])


class ProfileRecorder:
    """Thread-safe counters of what the app did, for the controls that learn."""

    def __init__(self, names_for: Callable[[str], list[str]] | None = None, *, root: str = "") -> None:
        """`root`: where the app's file system is seen from here (a cell's container: its init's
        /proc/<pid>/root), for hashing the executables it ran."""
        self.controls: frozenset[str] = frozenset()
        self.names_for = names_for
        self.root = root
        self.run_id = uuid.uuid4().hex
        self.dropped = 0
        self._items: dict[str, dict[tuple[Any, ...], _Item]] = {
            k: {} for k in ("process", "net", "dns", "listen")
        }
        self._dirty: set[tuple[str, tuple[Any, ...]]] = set()
        self._lock = threading.Lock()
        self._hashes: dict[tuple[str, int, int, int], str] = {}

    def set_controls(self, controls: frozenset[str]) -> None:
        self.controls = controls

    def observe(self, kind: str, facts: dict[str, Any]) -> None:
        controls = self.controls
        if not controls:
            return
        if kind == "exec" and "processes" in controls:
            exe = _real_exe(str(facts.get("exe") or ""))
            if exe:
                argv = facts.get("argv") or []
                self.observe_process(exe, argv if isinstance(argv, list) else [], _exe_of(facts.get("ppid")))
        elif kind == "net" and "network" in controls:
            self._net(facts)
        elif kind == "dns" and "dns" in controls:
            name = str(facts.get("name") or "").lower().rstrip(".")
            if name:
                self._hit("dns", (name,), lambda: {"name": name[:253]})
        elif kind == "listen" and "listening" in controls:
            port = facts.get("port")
            if isinstance(port, int) and port > 0:
                proto = str(facts.get("protocol") or "")
                self._hit("listen", (port, proto), lambda: {"port": port, "protocol": proto})

    def observe_process(self, exe: str, argv: list[Any], parent: str) -> None:
        """An exec of `exe` (the real file, as the app sees it) by a process of `parent`."""
        if "processes" not in self.controls or not exe:
            return
        shape = tuple(argv_shape([str(a) for a in argv]))
        self._hit("process", (exe, shape, parent),
                  lambda: {"exe": exe[:4096], "argv_shape": list(shape), "parent": parent[:4096]})

    def _net(self, facts: dict[str, Any]) -> None:
        """The hot one (every connect): a known destination is a counter bump; the resolver's names
        for its address are looked up when it is new and every 64th time after."""
        key = (facts.get("dest_ip"), facts.get("dest_port"), facts.get("protocol") or "")
        now = time.time()
        with self._lock:
            item = self._items["net"].get(key)
            if item is not None:
                item.count += 1
                item.last = now
                self._dirty.add(("net", key))
                if item.count & 63:
                    return
        ip, port, proto = key
        if not ip or not isinstance(port, int):
            return
        ip = str(ip)
        names = facts.get("names") or (self.names_for(ip) if self.names_for else [])
        if item is None:
            item = self._hit("net", key, lambda: {"ip": ip, "port": port, "protocol": proto, "names": []})
        if item is not None and names:
            with self._lock:
                _add_names(item, names)

    def observe_destinations(self, rows: list[tuple[str, int, str, int, float, float]], dropped: int = 0) -> None:
        """Destinations counted elsewhere (the native data plane's table): (ip, port, protocol, count,
        first, last) each, plus how many distinct ones did not fit there. The resolver's names for
        each address are looked up once per row (a row stands for every connect since the last)."""
        if "network" not in self.controls:
            return
        for ip, port, proto, count, first, last in rows:
            names = self.names_for(ip) if self.names_for else []
            key = (ip, port, proto)
            with self._lock:
                table = self._items["net"]
                item = table.get(key)
                if item is None:
                    if len(table) >= MAX_ITEMS_PER_KIND:
                        self.dropped += 1
                        continue
                    item = table[key] = _Item({"ip": ip, "port": port, "protocol": proto, "names": []}, first)
                item.count += count
                item.first, item.last = min(item.first, first), max(item.last, last)
                self._dirty.add(("net", key))
                _add_names(item, names)
        if dropped:
            with self._lock:
                self.dropped += dropped

    def _hit(self, kind: str, key: tuple[Any, ...], facts: Callable[[], dict[str, Any]]) -> _Item | None:
        now = time.time()
        with self._lock:
            table = self._items[kind]
            item = table.get(key)
            if item is None:
                if len(table) >= MAX_ITEMS_PER_KIND:
                    self.dropped += 1
                    return None
                item = table[key] = _Item(facts(), now)
            item.count += 1
            item.last = now
            self._dirty.add((kind, key))
            return item

    # -- reporting --------------------------------------------------------------------------------
    def take(self, *, full: bool = False, addresses: list[str] | None = None, routes: list[str] | None = None,
             workload: p.ProfileWorkload | None = None,
             ) -> tuple[list[p.ProfileReport], set[tuple[str, tuple[Any, ...]]]]:  # fmt: skip
        """The reports to send (changed items, or all) and the keys they cover (to `untake` when
        sending failed)."""
        with self._lock:
            keys = {(k, key) for k, t in self._items.items() for key in t} if full else set(self._dirty)
            self._dirty.clear()
            snap = [(k, key, dict(self._items[k][key].facts), self._items[k][key]) for k, key in keys]
            rows = [(k, f, it.count, it.first, it.last) for k, _key, f, it in snap]
            dropped = self.dropped
        if not rows and not full:
            return [], keys
        items: dict[str, list[Any]] = {"processes": [], "destinations": [], "dns": [], "listening": []}
        for kind, f, count, first, last in rows:
            seen = {"count": count, "first_seen": first, "last_seen": last}
            try:
                if kind == "process":
                    items["processes"].append(p.SeenProcess(**f, sha256=self._sha256(f["exe"]), **seen))
                elif kind == "net":
                    items["destinations"].append(p.SeenDestination(**f, **seen))
                elif kind == "dns":
                    items["dns"].append(p.SeenName(**f, **seen))
                else:
                    items["listening"].append(p.SeenListen(**f, **seen))
            except ValueError:  # a fact outside the wire bounds: not reportable, counted as dropped
                dropped += 1
        reports: list[p.ProfileReport] = []
        common = {
            "run_id": self.run_id, "controls": sorted(self.controls), "addresses": (addresses or [])[:16],
            "routes": (routes or [])[:64], "dropped": dropped, "workload": workload,
        }  # fmt: skip
        chunk: dict[str, list[Any]] = {k: [] for k in items}
        n = 0
        for k, values in items.items():
            for v in values:
                chunk[k].append(v)
                n += 1
                if n >= p.MAX_PROFILE_ITEMS or (k == "listening" and len(chunk[k]) >= 256):
                    reports.append(p.ProfileReport(**common, **chunk))  # type: ignore[arg-type]
                    chunk, n = {kk: [] for kk in items}, 0
        if n or not reports:
            reports.append(p.ProfileReport(**common, **chunk))  # type: ignore[arg-type]
        return reports, keys

    def pending(self) -> bool:
        """Items seen since the last report (kept when learning ends, so the last counts still go)."""
        return bool(self._dirty)

    def untake(self, keys: set[tuple[str, tuple[Any, ...]]]) -> None:
        with self._lock:
            self._dirty |= keys

    def _sha256(self, exe: str) -> str:
        """The file's digest, read through one fd that names a regular file (no FIFO can hold the
        reporter). Under a container's `root`, absolute symlinks on the way would resolve from the
        cell's own root: only a file on the device of `root` itself is hashed."""
        path = self.root + exe
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return ""
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_HASH_BYTES or not self._under_root(st):
                return ""
            key = (path, st.st_dev, st.st_ino, st.st_mtime_ns)
            hit = self._hashes.get(key)
            if hit is not None:
                return hit
            h = hashlib.sha256()
            try:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            except OSError:
                return ""
        if len(self._hashes) > 4096:
            self._hashes.clear()
        self._hashes[key] = h.hexdigest()
        return self._hashes[key]

    def _under_root(self, st: os.stat_result) -> bool:
        if not self.root:
            return True
        try:
            return os.stat(self.root).st_dev == st.st_dev
        except OSError:
            return False


def instance_addresses(env: dict[str, str]) -> list[str]:
    """The instance's own addresses as CF gives them (for the console's service identities)."""
    out = []
    for var in ("CF_INSTANCE_INTERNAL_IP", "CF_INSTANCE_IP"):
        v = env.get(var, "").strip()
        if v and v not in out:
            out.append(v[:64])
    return out


def app_routes(env: dict[str, str]) -> list[str]:
    try:
        app = json.loads(env.get("VCAP_APPLICATION") or "{}")
    except ValueError:
        return []
    if not isinstance(app, dict):
        return []
    uris = app.get("application_uris") or app.get("uris") or []
    if not isinstance(uris, list):
        return []
    return [str(u).split("/", 1)[0][:253] for u in uris if isinstance(u, str) and u][:64]


class ProfileReporter:
    """Sends the recorder's reports over the channel every `interval` seconds and at stop."""

    def __init__(
        self,
        recorder: ProfileRecorder,
        send: Callable[[p.ProfileReport], bool],
        *,
        interval: float = 60.0,
        addresses: list[str] | None = None,
        routes: list[str] | None = None,
        connects: Callable[[], int] | None = None,
        workload: p.ProfileWorkload | None = None,
    ) -> None:
        """`workload`: the container a cell defender reports for (each report names it)."""
        self.recorder = recorder
        self.workload = workload
        self.send = send
        self.interval = interval
        self.addresses = addresses or []
        self.routes = routes or []
        self.connects = connects
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_full = 0.0
        self._seen_connects = -1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="garrison-profile", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:
                log.exception("profile report")

    def flush(self) -> None:
        if not self.recorder.controls and not self.recorder.pending():
            return
        now = time.monotonic()
        connects = self.connects() if self.connects else 0
        full = now - self._last_full >= FULL_EVERY_S or connects != self._seen_connects
        reports, keys = self.recorder.take(full=full, addresses=self.addresses, routes=self.routes,
                                           workload=self.workload)
        if not reports:
            return
        for r in reports:
            if not self.send(r):
                self.recorder.untake(keys)
                return
            self.sent += 1
        if full:
            self._last_full, self._seen_connects = now, connects
