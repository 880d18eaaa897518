"""NetworkGuard: seccomp-notify handlers for the app's network syscalls.

Why emulation: with SECCOMP_USER_NOTIF_FLAG_CONTINUE the kernel re-reads the sockaddr from the
app's memory after our check, so a racing thread can swap in a denied address (measured: 406/3000
through). Where pidfd_getfd works we take the app's socket, perform connect/sendto/sendmsg/
sendmmsg/bind ourselves on the exact bytes we checked and hand the result back; the kernel never
reads the app's memory again. Where it does not (Garden), the guard decides and CONTINUEs: the
decision is right for the address it read, but a racing thread can win (documented).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from garrison.defender.net.contract import GONE, Handler, Notification, NotificationGone, SupervisorContext
from garrison.defender.net.dns_proxy import DnsProxy, PinTable, Upstream
from garrison.defender.net.normalise import (
    AF_INET,
    Call,
    IPAddress,
    Kind,
    Routed,
    normalise,
    pktinfo_source,
    read_length,
)
from garrison.defender.net.portscan import PortScanTracker
from garrison.defender.net.sockaddr import (
    MMSGHDR_SIZE,
    MSGHDR,
    BadSockaddr,
    decode_inet,
    decode_iovecs,
    decode_msghdr,
    inet_sockaddr,
)
from garrison.defender.net.workers import DaemonPool
from garrison.kernel import pidfd, sockets
from garrison.kernel.procmem import write_mem
from garrison.policy.audit import AuditEvent, AuditType, Severity
from garrison.policy.evaluate import ALLOW, Decision, decide_bind, decide_connect
from garrison.policy.learning import view_learning
from garrison.policy.model import Rule

log = logging.getLogger(__name__)

TRAPPED_SYSCALLS: list[str] = ["connect", "sendto", "sendmsg", "sendmmsg", "bind", "recvfrom"]
"""Syscalls the supervisor's filter must send to the guard."""

TRAP_ONLY_IF_ARG_NONZERO: dict[str, int] = {"recvfrom": 4, "sendto": 4}
"""recvfrom is only needed when it asks for the source address (args[4] != NULL): that is how the
guard makes redirected DNS replies look like they came from the configured nameserver. Trapping
every recvfrom would put every plain recv() of the app through the supervisor. sendto is only
needed with an address (args[4] != NULL): without one it goes to the socket's peer, which its
connect already decided (TCP Fast Open needs the address, a NULL one is the kernel's EINVAL), so
the guard could only let it through — at two context switches per `send()`, two of the three
notifications per request of a service that opens a backend connection per request."""

MSG_FASTOPEN = 0x20000000
MSG_DONTWAIT = socket.MSG_DONTWAIT
MAX_PAYLOAD = 1 << 20
UIO_MAXIOV = 1024
HOLD_S = 5.0  # how long a socket the guard bound is kept for a following connect (swap mode)
DNS_PORT = 53
_DENY_CONTROLS = frozenset({"network.outbound.deny", "network.bad_reputation_ips"})
_SWAPPABLE = frozenset(
    {
        (int(socket.SOCK_STREAM), 6),
        (int(socket.SOCK_STREAM), 262),
        (int(socket.SOCK_DGRAM), 17),
        (int(socket.SOCK_DGRAM), 136),
    }
)
_TCP_SYN_SENT, _TCP_CLOSE = 2, 7
_SO_PRIORITY = (socket.SOL_SOCKET, 12)
# Options not carried to a swapped socket: their value names a filter program or a descriptor in the
# app's address space, or they need CAP_NET_ADMIN/CAP_NET_RAW the app may lack but the guard may have.
_UNCARRIED_OPTIONS = frozenset(
    {
        (socket.SOL_SOCKET, 1),  # SO_DEBUG
        (socket.SOL_SOCKET, 26),  # SO_ATTACH_FILTER
        (socket.SOL_SOCKET, 27),  # SO_DETACH_FILTER
        (socket.SOL_SOCKET, 32),  # SO_SNDBUFFORCE
        (socket.SOL_SOCKET, 33),  # SO_RCVBUFFORCE
        (socket.SOL_SOCKET, 36),  # SO_MARK
        (socket.SOL_SOCKET, 50),  # SO_ATTACH_BPF
        (socket.SOL_SOCKET, 51),  # SO_ATTACH_REUSEPORT_CBPF
        (socket.SOL_SOCKET, 52),  # SO_ATTACH_REUSEPORT_EBPF
        (socket.IPPROTO_IP, 19),  # IP_TRANSPARENT
        (socket.IPPROTO_IPV6, 75),  # IPV6_TRANSPARENT
        (socket.IPPROTO_TCP, 31),  # TCP_ULP (needs an established connection anyway)
    }
)


@dataclass(frozen=True)
class _Redirect:
    original: bytes  # the nameserver sockaddr the app asked for (reported as reply source)
    pid: int


NOT_IP = -1  # family marker for a socket that is not AF_INET/AF_INET6 (unix, netlink, packet...)


class _Answer(Exception):
    """Answer the syscall with this errno, as the kernel would at this instant (EBADF, ENOTSOCK...)."""

    def __init__(self, err: int) -> None:
        super().__init__(err)
        self.errno = err


class _Sock:
    """The app's socket: our copy taken with pidfd_getfd where the host allows it (`fd`), and what kind
    of socket it is (from the copy, else from its system.sockprotoname); None = unknown."""

    def __init__(
        self, fd: int | None, family: int | None = None, type_: int | None = None, protocol: int = 0
    ) -> None:
        self.fd: int | None = None
        self.family = family
        self.type = type_
        self.protocol = protocol
        self.nonblocking = False
        if fd is not None:
            self.adopt(fd)

    def adopt(self, fd: int) -> None:
        """Hold `fd`, a descriptor for the app's socket (pidfd_getfd copy, or the one we installed)."""
        fam, self.type, self.protocol = sockets.sock_kind(fd)
        self.family = fam if fam in (socket.AF_INET, socket.AF_INET6) else NOT_IP
        self.nonblocking = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)
        self.fd = fd

    @property
    def is_ip(self) -> bool:
        return self.family != NOT_IP

    @property
    def proto(self) -> str:
        """tcp / udp, or "any" when the type is unknown (decided as the stricter of the two)."""
        if self.type is None:
            return "any"
        return {int(socket.SOCK_STREAM): "tcp", int(socket.SOCK_DGRAM): "udp"}.get(self.type, "raw")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@dataclass
class _Msg:
    """One message of sendto/sendmsg/sendmmsg: its address bytes exactly as the kernel reads them
    (None = no address) and how to gather its payload and control data."""

    name: bytes | None
    gather_from_app: Callable[[_Sock], tuple[bytes, bytes]]
    _gathered: tuple[bytes, bytes] | None = None

    def gather(self, sock: _Sock) -> tuple[bytes, bytes]:
        """(payload, control data), read from the app once."""
        if self._gathered is None:
            self._gathered = self.gather_from_app(sock)
        return self._gathered


def _answer_if_still_waiting(notif: Notification) -> None:
    """A "gone" error for a thread that is in fact still waiting must not leave it hanging."""
    valid = getattr(notif, "valid", None)
    if valid is None or getattr(notif, "replied", False):
        return
    with contextlib.suppress(Exception):
        if valid():
            log.warning("notification %s reported gone but still waiting: answered EFAULT", notif.id)
            notif.reply_error(errno.EFAULT)


def _so_error(fd: int) -> int:
    return struct.unpack("=i", sockets.getsockopt(fd, socket.SOL_SOCKET, socket.SO_ERROR, 4))[0]


def _priority_ok(value: bytes) -> bool:
    """SO_PRIORITY above 6 needs CAP_NET_ADMIN: carried only within what any app may set."""
    return len(value) >= 4 and 0 <= struct.unpack_from("=i", value)[0] <= 6


def _bounded_put(table: OrderedDict[int, Any], key: int, value: Any, limit: int = 4096) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > limit:
        table.popitem(last=False)


def _sockaddr(family: int, packed: bytes, port: int) -> bytes:
    """sockaddr_in / sockaddr_in6 for a local address read from /proc/<tid>/net/*."""
    return inet_sockaddr(ipaddress.ip_address(packed), port, family)


def _local_ip(fd: int) -> IPAddress | None:
    """The address a socket we hold is bound to (None when unbound or unreadable)."""
    try:
        local = decode_inet(sockets.sock_name(fd))
    except (OSError, BadSockaddr):
        return None
    return None if local is None else local.ip


def _send_timeout_ms(fd: int) -> int:
    sec, usec = struct.unpack("=qq", sockets.getsockopt(fd, socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16))
    return int(sec * 1000 + usec // 1000)


def _message(decision: Decision, dest: Routed | None) -> str:
    """The decision's reason, plus the address as the app wrote it when the kernel sends it elsewhere."""
    if dest is None or not dest.written or dest.written == dest.shown:
        return decision.reason
    return f"{decision.reason} (written as {dest.written}: {dest.why or 'same destination'})"


class NetworkGuard:
    """Outbound, DNS, listening-port, port-scan and bad-reputation controls for one app tree."""

    def __init__(
        self,
        ctx: SupervisorContext,
        *,
        upstreams: list[Upstream] | None = None,
        proxy_host: str = "127.0.0.1",
        dns_redirect: bool = True,
        emulate: bool = True,
        getfd: bool | None = None,
    ) -> None:
        """`emulate=False`: decide and CONTINUE only (the racy baseline, for comparison).
        `getfd`: whether pidfd_getfd may be used (None: probe). Without it the guard swaps sockets:
        it makes its own socket of the same kind, installs it over the app's descriptor (ADDFD +
        SETFD) and performs the call on it; `setsockopt` is then trapped too, so the options an app
        set before connect/bind are carried over."""
        self.ctx = ctx
        self.pins = PinTable()
        self.dns = DnsProxy(
            ctx.rule, self._audit_dns, self.pins, upstreams, host=proxy_host, on_query=self._dns_query
        )
        self.dns_redirect = dns_redirect
        self.emulate = emulate
        self.scans = PortScanTracker()
        self._redirects: OrderedDict[int, _Redirect] = OrderedDict()
        self._clients: OrderedDict[tuple[str, int], int] = OrderedDict()  # proxy client → pid
        self._lock = threading.Lock()
        self._getfd_ok = emulate and (pidfd.available()[1] if getfd is None else getfd)
        self._sockopts: OrderedDict[int, dict[tuple[int, int], bytes]] = OrderedDict()  # inode → options
        self._bound: OrderedDict[int, bytes] = OrderedDict()  # inode → address the guard bound it to
        self._ours: OrderedDict[int, None] = OrderedDict()  # inodes of sockets the guard installed
        self._held: OrderedDict[int, tuple[int, float]] = OrderedDict()  # inode → (our fd, until)
        self.stats = {"emulated": 0, "continued": 0, "refused": 0, "redirected": 0, "swapped": 0}
        self._stats_lock = threading.Lock()
        self._later = threading.local()  # forensic lines of the handler running on this thread
        # blocking emulated calls wait here, not on the listener thread; threads are reused
        self._workers = DaemonPool()
        self._cache_rule: Rule | None = None
        self._inert_rule: Rule | None = None
        self._inert_value = False
        self._cache: dict[tuple[tuple[IPAddress, ...], int, str, tuple[str, ...]], Decision] = {}
        self._routes: dict[tuple[bytes, str, int | None, int | None], Routed] = {}
        self.handlers: dict[str, Handler] = {
            "connect": self._guarded(self.on_connect),
            "sendto": self._guarded(self.on_sendto),
            "sendmsg": self._guarded(self.on_sendmsg),
            "sendmmsg": self._guarded(self.on_sendmmsg),
            "bind": self._guarded(self.on_bind),
            "recvfrom": self._guarded(self.on_recvfrom),
        }
        if self.swap:
            self.handlers["setsockopt"] = self.on_setsockopt

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the resolver proxy on loopback (pidfd_getfd was probed at construction)."""
        if self.dns_redirect:
            try:
                self.dns.start()
            except OSError as exc:
                log.warning("DNS proxy not started (%s): DNS queries are not policed", exc)
                self.dns_redirect = False

    def stop(self) -> None:
        self.dns.stop()
        self._workers.shutdown()
        with self._lock:
            for fd, _until in self._held.values():
                os.close(fd)
            self._held.clear()

    def environment(self) -> dict[str, str]:
        """Nothing is required in the app's environment; exported for diagnostics only."""
        if not self.dns_redirect or self.dns.address[1] == 0:
            return {}
        return {"GARRISON_DNS_PROXY": f"{self.dns.address[0]}:{self.dns.address[1]}"}

    @property
    def swap(self) -> bool:
        """Socket-swap emulation (no pidfd_getfd, as in Garden): connect, bind and TCP Fast Open act
        on a socket the guard made and installed over the app's descriptor."""
        return self.emulate and not self._getfd_ok

    @property
    def guarantee(self) -> str:
        """What the network controls guarantee on this host (for the start-up report)."""
        if self.emulate and self._getfd_ok:
            return "emulated (TOCTOU-safe)"
        if self.swap:
            return (
                "emulated by socket swap (connect, bind, TCP Fast Open TOCTOU-safe; UDP sendto/sendmsg "
                "are decided and continued: a racing thread can change their address)"
            )
        return "continue (a racing thread can change the address after the check)"

    # -- plumbing ------------------------------------------------------------------------------------
    def _guarded(self, fn: Callable[[Any], None]) -> Handler:
        def handler(notif: Notification, _ctx: SupervisorContext) -> None:
            self._later.lines = []
            try:
                fn(notif)
            except _Answer as ans:
                if not getattr(notif, "replied", False):
                    self._kernel_error(notif, ans.errno)
            except GONE:
                _answer_if_still_waiting(notif)
            except Exception:  # never leave the app's thread hanging in the kernel
                log.exception("network guard: %s", fn.__name__)
                if getattr(notif, "replied", False):
                    return
                rule = self.ctx.rule()
                fail_closed = rule is not None and "prevent" in (rule.network.effect, rule.dns.effect)
                with contextlib.suppress(Exception):
                    if fail_closed:
                        notif.reply_error(errno.EPERM)
                    else:
                        notif.reply_continue()
            finally:  # the app's thread has its answer by now: write the forensic lines
                lines, self._later.lines = self._later.lines, None
                for kind, facts in lines:
                    self._record(kind, **facts)

        handler.__name__ = fn.__name__
        return handler

    def _take(self, notif: Notification, fd: int) -> _Sock:
        """The app's socket: a copy with pidfd_getfd where allowed, else its kind by name only."""
        if self.emulate and self._getfd_ok:
            try:
                got = notif.get_fd(fd)
            except GONE:
                raise
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    raise _Answer(errno.EBADF) from exc
                if exc.errno in (errno.EPERM, errno.ENOSYS, errno.EACCES):
                    log.warning("pidfd_getfd unavailable (%s): network checks swap sockets", exc)
                    self._getfd_ok = False
            else:
                try:
                    return _Sock(got)
                except OSError as exc:
                    os.close(got)
                    if exc.errno == errno.ENOTSOCK:
                        raise _Answer(errno.ENOTSOCK) from exc
        return self._named(notif, fd)

    def _named(self, notif: Notification, fd: int) -> _Sock:
        """What kind of socket the app's fd is, from its system.sockprotoname (no pidfd needed)."""
        try:
            name = sockets.proto_name(notif.tid, fd)
        except OSError as exc:
            if not notif.valid():
                raise NotificationGone(f"notification {notif.id} is gone") from exc
            if exc.errno == errno.ENOENT:
                raise _Answer(errno.EBADF) from exc
            if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP):
                raise _Answer(errno.ENOTSOCK) from exc
            return _Sock(None)
        kind = sockets.PROTO_NAMES.get(name)
        if kind is not None:
            return _Sock(None, kind[0], kind[1], kind[2])
        if name in sockets.NON_IP_PROTO_NAMES:
            return _Sock(None, NOT_IP)
        return _Sock(None)  # an IP protocol we do not model (SCTP, L2TP...): decided strictly

    def _read_name(self, notif: Notification, call: Call, ptr: int, declared: int) -> bytes | None:
        """The address bytes exactly as the kernel reads them; None when there is no address or the
        kernel refuses the length by value (then CONTINUE cannot be raced)."""
        if ptr == 0:
            return None
        n = read_length(call, declared)
        if n is None:
            return None
        if n == 0:
            return b""
        raw = notif.read(ptr, n)
        if len(raw) < n:
            # Partly unmapped: the kernel would fault. Never CONTINUE on it (a racing thread could map
            # a denied address there before the kernel reads it): treated as gone, answered EFAULT.
            raise NotificationGone(f"sockaddr of notification {notif.id} is unreadable")
        return raw

    def _route(self, sock: _Sock | None, raw: bytes, call: Call) -> Routed:
        """normalise(), memoised (pure); asks the socket's bound address only when it matters."""
        fam, typ = (sock.family, sock.type) if sock is not None else (None, None)
        key = (raw, call, fam, typ)
        hit = self._routes.get(key)
        if hit is None:
            hit = normalise(raw, call=call, sock_family=fam, sock_type=typ)
            if len(self._routes) >= 8192:
                self._routes = {}
            self._routes[key] = hit
        if hit.needs_local and sock is not None and sock.fd is not None:
            local = _local_ip(sock.fd)
            if local is not None:
                return normalise(raw, call=call, sock_family=fam, sock_type=typ, local=local)
        return hit

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def _record(self, kind: str, **facts: object) -> None:
        """Forensic ring entry for allowed activity (only when the supervisor keeps one)."""
        record = getattr(self.ctx, "record", None)
        if record is not None:
            try:
                record(kind, **facts)
            except Exception:
                log.debug("forensic record failed", exc_info=True)

    def _record_later(self, kind: str, **facts: object) -> None:
        """Allowed activity is recorded after the reply when a handler runs on this thread."""
        lines = getattr(self._later, "lines", None)
        if lines is None:
            self._record(kind, **facts)
        else:
            lines.append((kind, facts))

    def _continue(self, notif: Notification) -> None:
        self._count("continued")
        notif.reply_continue()

    def _result(self, notif: Notification, value: int, err: int) -> None:
        self._count("emulated")
        if err:
            notif.reply_error(err)
        else:
            notif.reply_value(value)

    def _off_loop(self, notif: Notification, sock: _Sock, op: Callable[[], tuple[int, int]]) -> None:
        """Run a blocking emulated call on its own thread; the app's thread waits in the kernel."""

        def run() -> None:
            try:
                value, err = op()
                self._result(notif, value, err)
            except GONE:
                _answer_if_still_waiting(notif)
            except Exception:
                log.exception("network guard: emulated call")
                with contextlib.suppress(Exception):
                    notif.reply_error(errno.EIO)
            finally:
                sock.close()

        self._workers.submit(run)

    # -- decisions ---------------------------------------------------------------------------------
    def _decide_dest(self, notif: Notification, rule: Rule | None, dest: Routed, proto: str) -> bool:
        """Decide one destination (all its equivalent forms); audit; True when it must be refused."""
        assert dest.ip is not None
        ip = str(dest.ip)
        names = self.pins.names_for(ip)
        decision = self._decision(rule, dest, proto, names)
        if decision.audited:
            self._audit(notif, rule, decision, dest, proto, names)
        if decision.blocked:
            return True
        self._record_later("net", pid=notif.pid, dest_ip=ip, dest_port=dest.port, protocol=proto, names=names)
        if rule is not None and rule.network.effect != "disable":
            cfg = rule.network.port_scan
            if cfg is not None and cfg.enabled:
                v = self.scans.record(notif.pid, ip, dest.port, cfg)
                if v.scanning and (v.first or (rule.network.effect == "prevent" and v.new_dest)):
                    scan = Decision(
                        True,
                        rule.network.effect,
                        "network.port_scan",
                        f"{v.distinct} distinct destinations within {cfg.window_s:g}s "
                        f"(threshold {cfg.threshold})",
                    )
                    if v.first:
                        self._audit(notif, rule, scan, dest, proto, names)
                    if scan.blocked and v.new_dest:
                        return True
        return False

    def _decision(self, rule: Rule | None, dest: Routed, proto: str, names: list[str]) -> Decision:
        """decide_connect over every form of the destination, memoised per rule object (a policy push
        swaps the object: cache dropped). A deny or bad-reputation hit on any form decides; an
        allow-list is satisfied by any form (they are the same destination)."""
        key = (dest.candidates, dest.port, proto, tuple(names))
        if rule is not self._cache_rule:
            self._cache_rule, self._cache = rule, {}
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        decisions = [
            self._decide_one(rule, ip, dest.port, proto, names if i == 0 else self.pins.names_for(str(ip)))
            for i, ip in enumerate(dest.candidates)
        ]
        decision = next((d for d in decisions if d.violation and d.control in _DENY_CONTROLS), None)
        if decision is None:
            decision = ALLOW if any(not d.violation for d in decisions) else decisions[0]
        if len(self._cache) >= 8192:
            self._cache = {}
        self._cache[key] = decision
        return decision

    @staticmethod
    def _decide_one(rule: Rule | None, ip: IPAddress, port: int, proto: str, names: list[str]) -> Decision:
        if proto in ("tcp", "udp"):
            return decide_connect(rule, ip, port, proto, pinned_names=names)
        # socket type unknown: the stricter of the two
        d_tcp = decide_connect(rule, ip, port, "tcp", pinned_names=names)
        d_udp = decide_connect(rule, ip, port, "udp", pinned_names=names)
        return d_tcp if d_tcp.blocked or (d_tcp.audited and not d_udp.blocked) else d_udp

    def _inert(self, rule: Rule | None) -> bool:
        """True when no outbound, DNS or port-scan control can object to any destination: then a
        racing thread has nothing to win and the call is let through without emulation."""
        if rule is None:
            return True
        if rule is not self._inert_rule:
            nc, dc = rule.network, rule.dns
            net_idle = nc.effect == "disable" or not (
                nc.outbound.allow
                or nc.outbound.deny
                or nc.bad_reputation_ips
                or (nc.port_scan is not None and nc.port_scan.enabled)
            )
            dns_idle = dc.effect == "disable" or not (dc.allow or dc.deny)
            learning = "network" in view_learning(rule)  # its connects are recorded with their protocol
            self._inert_rule, self._inert_value = rule, net_idle and dns_idle and not learning
        return self._inert_value

    def _fast_pass(
        self, notif: Notification, rule: Rule | None, names: list[bytes | None], call: Call
    ) -> bool:
        """Inert rule and no DNS destination: let the call through untouched (recorded)."""
        if not self._inert(rule):
            return False
        routes = [self._route(None, raw, call) for raw in names if raw is not None]
        if self.dns_redirect and any(r.kind is Kind.DEST and r.port == DNS_PORT for r in routes):
            return False
        for r in routes:
            if r.kind is Kind.DEST:
                self._record("net", pid=notif.pid, dest_ip=str(r.ip), dest_port=r.port)
        self._continue(notif)
        return True

    def _refuse(self, notif: Notification, proto: str) -> None:
        self._count("refused")
        # what a firewall REJECT looks like to the app: refused stream, EPERM on datagrams
        notif.reply_error(errno.EPERM if proto == "udp" else errno.ECONNREFUSED)

    def _kernel_error(self, notif: Notification, err: int) -> None:
        """The kernel would refuse these exact bytes itself: say so now (nothing left to race)."""
        self._count("refused")
        notif.reply_error(err)

    def _unverifiable(self, notif: Notification, rule: Rule | None, sock: _Sock, why: str) -> None:
        """An address on an IP socket the guard cannot check race-free here (no copy of the socket to
        act on): refused with an audit under prevent, audited and let through under alert."""
        if rule is None or self._inert(rule):
            return self._continue(notif)
        effects = (rule.network.effect, rule.dns.effect)
        effect: Literal["prevent", "alert"] = "prevent" if "prevent" in effects else "alert"
        decision = Decision(True, effect, "network.outbound.unverifiable", why)
        self._audit(notif, rule, decision, None, sock.proto, [])
        if decision.blocked:
            return self._refuse(notif, sock.proto)
        return self._continue(notif)

    # -- socket swap (no pidfd_getfd: Garden) ------------------------------------------------------
    def _swappable(self, sock: _Sock) -> bool:
        """TCP/MPTCP streams and UDP/UDP-Lite datagrams on IPv4/IPv6: kinds an unprivileged app can make
        itself, so the guard making one for it grants nothing (no raw or ping sockets)."""
        return (
            self.swap
            and sock.fd is None
            and sock.family in (socket.AF_INET, socket.AF_INET6)
            and (sock.type, sock.protocol) in _SWAPPABLE
        )

    def _swap_in(self, notif: Notification, fd: int, sock: _Sock, *, autobind: bool = True) -> bool:
        """Make a socket of the app's kind, carry over O_NONBLOCK/O_CLOEXEC, the options the app set
        and its local address, install it over the app's descriptor `fd` (ADDFD + SETFD) and adopt
        it: from here on `sock.fd` is the app's socket exactly as a pidfd_getfd copy would be.
        False when it cannot be done without losing the socket's address (a UDP socket bound by an
        earlier send: the old socket keeps its port until the app's thread returns). Raises _Answer
        for a socket whose connect the kernel would refuse (already connected)."""
        flags, ino = self._fd_info(notif, fd)
        held = self._unhold(ino)
        if held is not None:  # bound by us a moment ago and still held: it is the app's socket
            sock.adopt(held)
            return True
        v6 = sock.family == socket.AF_INET6
        stream = sock.type == socket.SOCK_STREAM
        with self._lock:
            ours = ino in self._ours
            local = self._bound.get(ino)
            options = dict(self._sockopts.get(ino, {}))
        if ours and stream:  # one we installed and connected before: the kernel says where it stands
            entry = sockets.proc_net_entry(notif.tid, "tcp6" if v6 else "tcp", ino)
            if entry is not None and entry.state != _TCP_CLOSE:
                raise _Answer(errno.EALREADY if entry.state == _TCP_SYN_SENT else errno.EISCONN)
        if autobind and not stream:
            entry = sockets.proc_net_entry(notif.tid, "udp6" if v6 else "udp", ino)
            if entry is not None and entry.local_port:
                return False
        assert sock.family is not None and sock.type is not None
        new = sockets.new_socket(sock.family, sock.type, sock.protocol)
        try:
            if flags & os.O_NONBLOCK:
                fcntl.fcntl(new, fcntl.F_SETFL, fcntl.fcntl(new, fcntl.F_GETFL) | os.O_NONBLOCK)
            for (level, opt), value in options.items():
                sockets.raw_setsockopt(new, level, opt, value)  # the app's own call saw any error
            notif.install_fd(new, fd, cloexec=bool(flags & os.O_CLOEXEC))
            sock.adopt(new)
        except BaseException:
            os.close(new)
            raise
        new_ino = os.fstat(new).st_ino
        with self._lock:
            _bounded_put(self._ours, new_ino, None)
            if options:
                _bounded_put(self._sockopts, new_ino, options)
        self._count("swapped")
        if local is not None:
            # the old socket keeps its address until the app's thread returns from this syscall:
            # sharing it needs SO_REUSEADDR on both (the app's choice); otherwise the kernel's error
            reuse = (socket.SOL_SOCKET, socket.SO_REUSEADDR) in options
            err = sockets.raw_bind(new, local)
            if err:
                raise _Answer(err)
            if reuse:
                self._remember_bound(new, new_ino)
        return True

    def _hold(self, fd: int, ino: int) -> None:
        """Keep a socket we just bound for a few seconds: a connect that follows (bind-then-connect
        clients) is then performed on it instead of a second swap, whose bind would find the port
        still taken by this socket."""
        now = time.monotonic()
        with self._lock:
            expired = [k for k, (_f, until) in self._held.items() if until < now]
            for k in expired:
                os.close(self._held.pop(k)[0])
            if len(self._held) >= 256:
                os.close(self._held.popitem(last=False)[1][0])
            self._held[ino] = (os.dup(fd), now + HOLD_S)

    def _unhold(self, ino: int) -> int | None:
        with self._lock:
            got = self._held.pop(ino, None)
        if got is None:
            return None
        if got[1] < time.monotonic():
            os.close(got[0])
            return None
        return got[0]

    def _fd_info(self, notif: Notification, fd: int) -> tuple[int, int]:
        try:
            return sockets.fd_info(notif.tid, fd)
        except OSError as exc:
            if not notif.valid():
                raise NotificationGone(f"notification {notif.id} is gone") from exc
            raise _Answer(errno.EBADF) from exc

    def _remember_bound(self, fd: int, ino: int) -> None:
        try:
            name = sockets.sock_name(fd)
        except OSError:
            return
        with self._lock:
            _bounded_put(self._bound, ino, name)

    def on_setsockopt(self, notif: Notification, _ctx: SupervisorContext) -> None:
        """Swap mode only: remember the options an app sets, to carry them over to a swapped socket.
        Never refuses: the kernel runs the app's own call (CONTINUE)."""
        try:
            fd, level, opt, size = (int(notif.args[i]) & 0xFFFFFFFF for i in (0, 1, 2, 4))
            ptr = notif.args[3]
            if ptr and 0 < size <= 512 and (level, opt) not in _UNCARRIED_OPTIONS:
                value = notif.read(ptr, size)
                _flags, ino = sockets.fd_info(notif.tid, fd)
                if len(value) == size and ((level, opt) != _SO_PRIORITY or _priority_ok(value)):
                    with self._lock:
                        opts = self._sockopts.get(ino)
                        if opts is None:
                            opts = {}
                            _bounded_put(self._sockopts, ino, opts)
                        if len(opts) < 64 or (level, opt) in opts:
                            opts[(level, opt)] = value
        except Exception:
            log.debug("setsockopt not recorded", exc_info=True)
        with contextlib.suppress(Exception):
            if not getattr(notif, "replied", False):
                self._continue(notif)

    # -- connect -----------------------------------------------------------------------------------
    def on_connect(self, notif: Notification) -> None:
        fd, ptr, length = notif.args[0], notif.args[1], notif.args[2]
        raw = self._read_name(notif, "connect", ptr, length)
        if raw is None:
            return self._continue(notif)
        rule = self.ctx.rule()
        if self._fast_pass(notif, rule, [raw], "connect"):
            return None
        sock = self._take(notif, fd)
        try:
            dest = self._route(sock, raw, "connect")
            if dest.kind is Kind.ERROR:
                return self._kernel_error(notif, dest.errno)
            if not sock.is_ip:
                return self._continue(notif)  # unix, netlink...: no IP destination possible
            if dest.kind is not Kind.DEST:  # AF_UNSPEC disconnect, or a family we cannot tell
                if sock.fd is not None:
                    return self._result(notif, 0, sockets.raw_connect(sock.fd, raw))
                if dest.kind is Kind.NONE and self._swappable(sock):
                    # a fresh socket of the same kind (explicit bind kept) is the disconnected socket
                    self._swap_in(notif, fd, sock, autobind=False)
                    return self._result(notif, 0, 0)
                return self._unverifiable(notif, rule, sock, f"connect: {dest.why}")
            dns = dest.port == DNS_PORT and (sock.fd is not None or self._swappable(sock))
            if not (dns and self._redirectable(sock, swapping=True)):
                dns = False
                if self._decide_dest(notif, rule, dest, sock.proto):
                    return self._refuse(notif, "udp" if sock.proto == "udp" else "tcp")
            if self._swappable(sock) and not self._swap_in(notif, fd, sock):
                # a UDP socket that holds a port from an earlier send: decided, then CONTINUE (racy,
                # as its sends are in this mode); a DNS query on it is decided like any destination
                if dns and self._decide_dest(notif, rule, dest, sock.proto):
                    return self._refuse(notif, "udp")
                dns = False
            if dns:
                return self._redirect_connect(notif, sock, dest, raw)
            if sock.fd is None:
                return self._continue(notif)
            if sock.type == socket.SOCK_STREAM and not sock.nonblocking:
                return self._blocking_connect(notif, sock, raw)
            return self._result(notif, 0, sockets.raw_connect(sock.fd, raw))
        finally:
            sock.close()

    def _blocking_connect(self, notif: Notification, sock: _Sock, raw: bytes) -> None:
        """A blocking stream connect without a thread per call: start it non-blocking (O_NONBLOCK is
        set on the shared file description for the two syscalls it takes), answer at once when the
        handshake is already done (loopback, LAN), else let a worker wait for it as the kernel would,
        honouring SO_SNDTIMEO (→ EINPROGRESS on timeout, like a blocking connect)."""
        assert sock.fd is not None
        fd = sock.fd
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        try:
            err = sockets.raw_connect(fd, raw)
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        if err != errno.EINPROGRESS:
            return self._result(notif, 0, err)
        p = select.poll()
        p.register(fd, select.POLLOUT)
        if p.poll(0):
            return self._result(notif, 0, _so_error(fd))
        timeout = _send_timeout_ms(fd)

        def wait() -> tuple[int, int]:
            # wake up every second to notice an app thread that died meanwhile
            left = timeout if timeout > 0 else None
            while True:
                step = 1000 if left is None else min(left, 1000)
                if p.poll(step):
                    return 0, _so_error(fd)
                if left is not None:
                    left -= step
                    if left <= 0:
                        return 0, errno.EINPROGRESS
                valid = getattr(notif, "valid", None)
                if valid is not None and not valid():
                    return 0, errno.EINTR  # nobody is waiting for this answer any more

        owned = _Sock(None)
        owned.fd, sock.fd = sock.fd, None
        self._off_loop(notif, owned, wait)
        return None

    def _redirectable(self, sock: _Sock, *, swapping: bool = False) -> bool:
        """A DNS query on this socket can go to the proxy (we hold it, or will once swapped)."""
        return (
            self.dns_redirect
            and (sock.fd is not None or (swapping and self._swappable(sock)))
            and self.dns.address[1] != 0
            and sock.type in (socket.SOCK_DGRAM, socket.SOCK_STREAM)
        )

    def _proxy_sockaddr(self, sock: _Sock) -> bytes:
        family = socket.AF_INET6 if sock.family == socket.AF_INET6 else socket.AF_INET
        return inet_sockaddr(ipaddress.ip_address(self.dns.address[0]), self.dns.address[1], family)

    def _remember(self, sock: _Sock, original: bytes, pid: int) -> None:
        assert sock.fd is not None
        ino = os.fstat(sock.fd).st_ino
        try:
            local = decode_inet(sockets.sock_name(sock.fd))
        except (OSError, BadSockaddr):
            local = None
        with self._lock:
            self._redirects[ino] = _Redirect(original, pid)
            self._redirects.move_to_end(ino)
            while len(self._redirects) > 4096:
                self._redirects.popitem(last=False)
            if local is not None:
                self._clients[(str(local.ip), local.port)] = pid
                while len(self._clients) > 4096:
                    self._clients.popitem(last=False)
        self._count("redirected")

    def _redirect_connect(self, notif: Notification, sock: _Sock, dest: Routed, raw: bytes) -> None:
        assert sock.fd is not None
        err = sockets.raw_connect(sock.fd, self._proxy_sockaddr(sock))
        if err in (0, errno.EINPROGRESS):
            self._remember(sock, raw, notif.pid)
        self._result(notif, 0, err)

    # -- sendto / sendmsg / sendmmsg: one path ------------------------------------------------------
    def on_sendto(self, notif: Notification) -> None:
        fd, buf, size, flags, ptr, length = notif.args[:6]
        if ptr == 0:
            return self._continue(notif)  # no address (by value): the socket's peer
        raw = self._read_name(notif, "sendto", ptr, length)
        if raw is None:
            return self._continue(notif)  # a length the kernel refuses by value

        def gather(sock: _Sock) -> tuple[bytes, bytes]:
            if size > MAX_PAYLOAD and sock.type != socket.SOCK_STREAM:
                raise _Answer(errno.EMSGSIZE)
            return (notif.read(buf, min(size, MAX_PAYLOAD)) if size else b""), b""

        return self._send_messages(notif, fd, flags, [_Msg(raw, gather)], vec=0)

    def on_sendmsg(self, notif: Notification) -> None:
        fd, msg_ptr, flags = notif.args[0], notif.args[1], notif.args[2]
        if msg_ptr == 0:
            return self._continue(notif)
        hdr = decode_msghdr(notif.read(msg_ptr, MSGHDR.size))
        return self._send_messages(notif, fd, flags, [self._message(notif, hdr)], vec=0)

    def on_sendmmsg(self, notif: Notification) -> None:
        fd, vec, vlen, flags = notif.args[0], notif.args[1], notif.args[2], notif.args[3]
        vlen = min(vlen, UIO_MAXIOV)
        if vec == 0 or vlen == 0:
            return self._continue(notif)
        table = notif.read(vec, vlen * MMSGHDR_SIZE)
        msgs = [
            self._message(notif, decode_msghdr(table[i * MMSGHDR_SIZE : i * MMSGHDR_SIZE + MSGHDR.size]))
            for i in range(vlen)
        ]
        return self._send_messages(notif, fd, flags, msgs, vec=vec)

    def _message(self, notif: Notification, hdr: Any) -> _Msg:
        raw = None
        if hdr.name_ptr and hdr.name_len:
            raw = self._read_name(notif, "sendmsg", hdr.name_ptr, hdr.name_len)
            if raw is None:
                raw = b""  # negative msg_namelen: the kernel's EINVAL
        return _Msg(raw, lambda _sock: self._gather(notif, hdr))

    def _send_messages(self, notif: Notification, fd: int, flags: int, msgs: list[_Msg], *, vec: int) -> None:
        """Decide every address of a sendto/sendmsg/sendmmsg, then send exactly what was decided —
        the address itself, none, or the DNS proxy for a redirected query — on our copy of the
        socket, or CONTINUE where there is none. `vec` != 0: sendmmsg (msg_len written back)."""
        rule = self.ctx.rule()
        if self._fast_pass(notif, rule, [m.name for m in msgs], "sendmsg"):
            return None
        sock = self._take(notif, fd)
        try:
            if not sock.is_ip or (sock.type == socket.SOCK_STREAM and not flags & MSG_FASTOPEN):
                return self._continue(notif)  # not IP, or a stream socket: the address is ignored
            plan: list[tuple[_Msg, bytes | None]] = []
            for m in msgs:
                to = m.name
                if m.name is not None:
                    dest = self._route(sock, m.name, "sendmsg")  # same rows as sendto
                    if (
                        dest.kind is Kind.DEST
                        and dest.why.startswith("unspecified")
                        and dest.family == AF_INET
                    ):
                        # 0.0.0.0 goes to the source address, which IP_PKTINFO may pick per message
                        spec = pktinfo_source(m.gather(sock)[1])
                        if spec is not None:
                            dest = normalise(
                                m.name,
                                call="sendmsg",
                                sock_family=sock.family,
                                sock_type=sock.type,
                                local=spec,
                            )
                    if dest.kind is Kind.ERROR:
                        if not plan:
                            return self._kernel_error(notif, dest.errno)
                        break  # the kernel stops a batch at the first error and reports what it sent
                    if dest.kind is Kind.NONE:
                        to = None  # the kernel ignores this name (AF_UNSPEC on an IPv6 datagram socket)
                    elif dest.kind is Kind.FOREIGN:
                        if sock.fd is None:
                            return self._unverifiable(notif, rule, sock, f"send: {dest.why}")
                    elif (
                        dest.port == DNS_PORT and sock.type == socket.SOCK_DGRAM and self._redirectable(sock)
                    ):
                        self._remember(sock, m.name, notif.pid)
                        to = self._proxy_sockaddr(sock)
                    elif self._decide_dest(notif, rule, dest, sock.proto):
                        if not plan or sock.fd is None:  # CONTINUE cannot stop a batch half-way
                            return self._refuse(notif, sock.proto)
                        break
                plan.append((m, to))
            if sock.type == socket.SOCK_STREAM and self._swappable(sock):
                self._swap_in(notif, fd, sock)  # TCP Fast Open: a connect, made on our socket
            if sock.fd is None:
                return self._continue(notif)
            fd_ = sock.fd
            if not vec:
                [(m, to)] = plan
                data, control = m.gather(sock)
                return self._send(
                    notif, sock, lambda f: sockets.raw_sendmsg(fd_, to, data, control, f), flags
                )
            sent = 0
            for i, (m, to) in enumerate(plan):
                data, control = m.gather(sock)
                n, err = sockets.raw_sendmsg(fd_, to, data, control, flags | MSG_DONTWAIT)
                if err:
                    if sent == 0:
                        return self._result(notif, 0, err)
                    break
                write_mem(notif.pid, vec + i * MMSGHDR_SIZE + MSGHDR.size, struct.pack("=I", n))
                sent += 1
            return self._result(notif, sent, 0)
        finally:
            sock.close()

    def _send(
        self, notif: Notification, sock: _Sock, op: Callable[[int], tuple[int, int]], flags: int
    ) -> None:
        """Try without blocking; if the app's socket would block, finish on a worker thread."""
        assert sock.fd is not None
        blocking = not sock.nonblocking and not flags & MSG_DONTWAIT
        if blocking and flags & MSG_FASTOPEN and sock.type == socket.SOCK_STREAM:
            n, err = -1, errno.EINPROGRESS  # a blocking Fast Open connect: wait for it on a worker
        else:
            n, err = op(flags | MSG_DONTWAIT)
        if blocking and (
            err in (errno.EAGAIN, errno.EWOULDBLOCK)
            or (err == errno.EINPROGRESS and n < 0 and flags & MSG_FASTOPEN)
        ):
            owned = _Sock(None)
            owned.fd, sock.fd = sock.fd, None
            self._off_loop(notif, owned, lambda: op(flags))
            return None
        return self._result(notif, n, err)

    def _gather(self, notif: Notification, hdr: Any) -> tuple[bytes, bytes]:
        iovlen = min(hdr.iov_len, UIO_MAXIOV)
        iovs = decode_iovecs(notif.read(hdr.iov_ptr, iovlen * 16), iovlen) if iovlen and hdr.iov_ptr else []
        parts: list[bytes] = []
        total = 0
        for base, ln in iovs:
            take = min(ln, MAX_PAYLOAD - total)
            if take <= 0:
                break
            parts.append(notif.read(base, take) if base else b"")
            total += take
        control = b""
        if hdr.control_ptr and 0 < hdr.control_len <= 65536:
            control = notif.read(hdr.control_ptr, hdr.control_len)
        return b"".join(parts), control

    # -- bind ----------------------------------------------------------------------------------------
    def on_bind(self, notif: Notification) -> None:
        fd, ptr, length = notif.args[0], notif.args[1], notif.args[2]
        raw = self._read_name(notif, "bind", ptr, length)
        if raw is None:
            return self._continue(notif)
        sock = self._take(notif, fd)
        try:
            addr = self._route(sock, raw, "bind")
            if addr.kind is Kind.ERROR:
                return self._kernel_error(notif, addr.errno)
            if not sock.is_ip:
                return self._continue(notif)
            rule = self.ctx.rule()
            if addr.kind is not Kind.DEST:
                if sock.fd is not None:
                    return self._result(notif, 0, sockets.raw_bind(sock.fd, raw))
                return self._unverifiable(notif, rule, sock, f"bind: {addr.why}")
            decision = decide_bind(rule, addr.port)
            if decision.audited:
                self._audit(notif, rule, decision, addr, None, [])
            if decision.blocked:
                self._count("refused")
                return notif.reply_error(errno.EACCES)
            if addr.port:
                proto = {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp"}.get(sock.type or 0, "")
                self._record_later("listen", pid=notif.pid, port=addr.port, protocol=proto)
            if self._swappable(sock):
                return self._swap_bind(notif, fd, sock, raw)
            if sock.fd is None:
                return self._continue(notif)
            return self._result(notif, 0, sockets.raw_bind(sock.fd, raw))
        finally:
            sock.close()

    def _swap_bind(self, notif: Notification, fd: int, sock: _Sock, raw: bytes) -> None:
        """Swap mode: the bind is performed on a swapped-in socket, so the port decided is the port
        bound and the exact local address (ephemeral port included) is known for a later swap."""
        _flags, ino = self._fd_info(notif, fd)
        with self._lock:
            bound, ours = ino in self._bound, ino in self._ours
        if not bound and (ours or sock.type != socket.SOCK_STREAM):  # connected, or autobound by a send
            table = ("tcp" if sock.type == socket.SOCK_STREAM else "udp") + (
                "6" if sock.family == socket.AF_INET6 else ""
            )
            entry = sockets.proc_net_entry(notif.tid, table, ino)
            bound = entry is not None and (entry.local_port != 0 or entry.state != _TCP_CLOSE)
        if bound:
            return self._kernel_error(notif, errno.EINVAL)  # bound already: the kernel's answer
        self._swap_in(notif, fd, sock, autobind=False)
        assert sock.fd is not None
        err = sockets.raw_bind(sock.fd, raw)
        if not err:
            ino = os.fstat(sock.fd).st_ino
            self._remember_bound(sock.fd, ino)
            self._hold(sock.fd, ino)
        return self._result(notif, 0, err)

    # -- recvfrom (DNS replies on redirected sockets) -----------------------------------------------
    def on_recvfrom(self, notif: Notification) -> None:
        fd, buf, size, flags, src, lenp = notif.args[:6]
        with self._lock:
            empty = not self._redirects
        if empty or src == 0:
            return self._continue(notif)
        try:
            ino = os.stat(f"/proc/{notif.pid}/fd/{fd}").st_ino
        except OSError:
            return self._continue(notif)
        with self._lock:
            red = self._redirects.get(ino)
        if red is None:
            return self._continue(notif)
        sock = self._take(notif, fd)
        if sock.fd is None:
            return self._continue(notif)
        fd_ = sock.fd
        size = min(size, 65536)

        def op(f: int) -> tuple[int, int]:
            data, n, err = sockets.raw_recvfrom(fd_, size, f)
            if err:
                return -1, err
            if data:
                write_mem(notif.pid, buf, data)
            if lenp:
                have = struct.unpack("=I", notif.read(lenp, 4))[0]
                write_mem(notif.pid, src, red.original[: min(have, len(red.original))])
                write_mem(notif.pid, lenp, struct.pack("=I", len(red.original)))
            return n, 0

        try:
            return self._send(notif, sock, op, flags)
        finally:
            sock.close()

    # -- audits --------------------------------------------------------------------------------------
    def _audit(
        self,
        notif: Notification,
        rule: Rule | None,
        decision: Decision,
        dest: Routed | None,
        proto: str | None,
        names: list[str],
    ) -> None:
        typ: AuditType
        if decision.control == "network.bad_reputation_ips":
            typ = "bad_reputation"
        elif decision.control == "network.port_scan":
            typ = "port_scan"
        elif decision.control.startswith("network.listening"):
            typ = "listen"
        elif decision.control.startswith("dns."):
            typ = "dns"
        else:
            typ = "network"
        info = getattr(notif, "info", None) or self._proc(notif.pid)  # the native loop reads it early
        severity: Severity = "high" if typ in ("bad_reputation", "port_scan") else "medium"
        self.ctx.audit(
            AuditEvent(
                type=typ,
                rule=rule.name if rule else "",
                control=decision.control,
                effect="prevent" if decision.blocked else "alert",
                severity=severity,
                pid=notif.pid,
                ppid=getattr(info, "ppid", None),
                exe=getattr(info, "exe", None),
                argv=getattr(info, "argv", None),
                cwd=getattr(info, "cwd", None),
                dest_ip=str(dest.ip) if dest is not None else None,
                dest_port=dest.port if dest is not None else None,
                dest_name=names[0] if names else None,
                protocol=proto if proto in ("tcp", "udp") else None,
                message=_message(decision, dest),
            )
        )

    def _dns_query(self, name: str, client: Upstream) -> None:
        with self._lock:
            pid = self._clients.get(client)
        self._record("dns", pid=pid, name=name)

    def _audit_dns(self, name: str, decision: Decision, client: Upstream | None) -> None:
        with self._lock:
            pid = self._clients.get(client) if client else None
        info = self._proc(pid) if pid else None
        rule = self.ctx.rule()
        self.ctx.audit(
            AuditEvent(
                type="dns",
                rule=rule.name if rule else "",
                control=decision.control,
                effect="prevent" if decision.blocked else "alert",
                pid=pid,
                ppid=getattr(info, "ppid", None),
                exe=getattr(info, "exe", None),
                argv=getattr(info, "argv", None),
                cwd=getattr(info, "cwd", None),
                dest_name=name[:512],
                protocol="dns",
                message=decision.reason,
            )
        )

    def _proc(self, pid: int | None) -> Any:
        if pid is None:
            return None
        try:
            return self.ctx.proc(pid)
        except Exception:
            return None
