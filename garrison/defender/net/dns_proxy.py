"""The defender's own resolver proxy: the app's DNS traffic is redirected here by the guard.

It decides every queried name with the shared evaluator, answers denied names itself (NXDOMAIN
on `prevent`), forwards the rest unchanged to the real upstream, and records the A/AAAA answers so
connects can be pinned to the IPs that allowed names resolved to.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from garrison.policy.evaluate import Decision, decide_dns
from garrison.policy.model import Rule

log = logging.getLogger(__name__)

Upstream = tuple[str, int]


def resolv_conf_upstreams(path: str = "/etc/resolv.conf") -> list[Upstream]:
    """Nameservers from resolv.conf (port 53); glibc's default 127.0.0.1 when there are none."""
    out: list[Upstream] = []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        m = re.match(r"\s*nameserver\s+(\S+)", line)
        if m:
            try:
                ip = ipaddress.ip_address(m.group(1).split("%")[0])
            except ValueError:
                continue
            out.append((str(ip), 53))
    return out or [("127.0.0.1", 53)]


class PinTable:
    """ip → names that resolved to it (with expiry), filled from the proxy's forwarded answers."""

    def __init__(self, min_ttl_s: float = 300.0, max_entries: int = 65536) -> None:
        self._pins: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._min_ttl = min_ttl_s
        self._max = max_entries
        self.version = 0  # bumped on every change (the native data plane copies the table then)

    def add(self, ip: str, name: str, ttl: float) -> None:
        name = name.lower().rstrip(".")
        until = time.monotonic() + max(ttl, self._min_ttl)
        with self._lock:
            if ip not in self._pins and len(self._pins) >= self._max:
                self._pins.pop(next(iter(self._pins)))
            names = self._pins.setdefault(ip, {})
            names[name] = max(until, names.get(name, 0.0))
            self.version += 1

    def snapshot(self) -> dict[str, dict[str, float]]:
        """ip → {name: monotonic expiry}, copied (for the native data plane's pin set)."""
        with self._lock:
            return {ip: dict(names) for ip, names in self._pins.items()}

    def names_for(self, ip: str) -> list[str]:
        now = time.monotonic()
        with self._lock:
            names = self._pins.get(ip)
            if not names:
                return []
            return [n for n, until in names.items() if until >= now]


AuditFn = Callable[[str, Decision, Upstream | None], None]


class DnsProxy:
    """UDP and TCP on the same loopback port. `decide_for(name)` and `audit` come from the guard."""

    def __init__(
        self,
        rule: Callable[[], Rule | None],
        audit: AuditFn,
        pins: PinTable,
        upstreams: list[Upstream] | None = None,
        host: str = "127.0.0.1",
        timeout_s: float = 3.0,
        on_query: Callable[[str, Upstream], None] | None = None,
        listen_socket: Callable[[int, int], socket.socket] = socket.socket,
    ) -> None:
        """`listen_socket(family, type)` makes the listening sockets: the cell defender makes them in
        a container's network namespace (forwarding to the upstreams stays in the defender's own)."""
        self._rule = rule
        self._listen_socket = listen_socket
        self._on_query = on_query
        self._audit = audit
        self.pins = pins
        self.upstreams = upstreams if upstreams is not None else resolv_conf_upstreams()
        self._host = host
        self._timeout = timeout_s
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._stop_r, self._stop_w = socket.socketpair()
        self.address: Upstream = (host, 0)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Upstream:
        fam = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        tcp = self._listen_socket(fam, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # one port number for both transports, so a redirected TCP retry finds the proxy too
        for _ in range(50):
            tcp.bind((self._host, 0))
            port = tcp.getsockname()[1]
            udp = self._listen_socket(fam, socket.SOCK_DGRAM)
            try:
                udp.bind((self._host, port))
                break
            except OSError:
                udp.close()
                tcp.close()
                tcp = self._listen_socket(fam, socket.SOCK_STREAM)
        else:  # pragma: no cover - 50 collisions in a row
            raise OSError("could not find a free port for both UDP and TCP")
        tcp.listen(64)
        self._udp, self._tcp = udp, tcp
        self.address = (self._host, port)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="garrison-dns")
        self._thread = threading.Thread(target=self._serve, name="garrison-dns-proxy", daemon=True)
        self._thread.start()
        return self.address

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop_w.send(b"x")
        self._thread.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()
        self._thread = None

    # -- serving ---------------------------------------------------------------------------------
    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None and self._pool is not None
        sel = selectors.DefaultSelector()
        sel.register(self._udp, selectors.EVENT_READ, "udp")
        sel.register(self._tcp, selectors.EVENT_READ, "tcp")
        sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        while True:
            for key, _ in sel.select():
                if key.data == "stop":
                    sel.close()
                    return
                try:
                    if key.data == "udp":
                        data, client = self._udp.recvfrom(65535)
                        self._pool.submit(self._answer_udp, data, client)
                    else:
                        conn, client = self._tcp.accept()
                        self._pool.submit(self._answer_tcp, conn, client)
                except OSError as exc:
                    log.debug("dns proxy: %s", exc)

    def _answer_udp(self, data: bytes, client: tuple[str, int]) -> None:
        reply = self.handle(data, (client[0], client[1]), tcp=False)
        if reply is not None and self._udp is not None:
            try:
                self._udp.sendto(reply, client)
            except OSError as exc:
                log.debug("dns proxy reply: %s", exc)

    def _answer_tcp(self, conn: socket.socket, client: tuple[str, int]) -> None:
        conn.settimeout(self._timeout * 3)
        with conn:
            try:
                while True:
                    head = _recv_exact(conn, 2)
                    if not head:
                        return
                    query = _recv_exact(conn, struct.unpack("!H", head)[0])
                    reply = self.handle(query, (client[0], client[1]), tcp=True)
                    if reply is None:
                        return
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return

    # -- one query ---------------------------------------------------------------------------------
    def handle(self, wire: bytes, client: Upstream, *, tcp: bool) -> bytes | None:
        """Decide and answer one query; None means no reply (unparseable or upstream silent)."""
        # dnspython is imported by the first query, not at start: it is ~15 % of the defender's
        # start-up and memory, and many apps never resolve a name
        import dns.exception
        import dns.message
        import dns.rcode

        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        rule = self._rule()
        for q in query.question:
            name = q.name.to_text(omit_final_dot=True)
            decision = decide_dns(rule, name)
            if self._on_query is not None:
                self._on_query(name, client)
            if decision.audited:
                self._audit(name, decision, client)
            if decision.blocked:
                resp = dns.message.make_response(query)
                resp.set_rcode(dns.rcode.NXDOMAIN)
                return resp.to_wire()
        answer = self._forward(wire, tcp=tcp)
        if answer is not None:
            self._record(answer)
        return answer

    def _forward(self, wire: bytes, *, tcp: bool) -> bytes | None:
        for host, port in self.upstreams:
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            try:
                if tcp:
                    with socket.create_connection((host, port), timeout=self._timeout) as s:
                        s.sendall(struct.pack("!H", len(wire)) + wire)
                        n = struct.unpack("!H", _recv_exact(s, 2))[0]
                        return _recv_exact(s, n)
                with socket.socket(fam, socket.SOCK_DGRAM) as s:
                    s.settimeout(self._timeout)
                    s.connect((host, port))
                    s.send(wire)
                    while True:
                        data = s.recv(65535)
                        if data[:2] == wire[:2]:  # same transaction id
                            return data
            except (OSError, struct.error) as exc:
                log.debug("dns upstream %s:%s: %s", host, port, exc)
        return None

    def _record(self, answer: bytes) -> None:
        import dns.exception
        import dns.message
        import dns.rdatatype

        try:
            msg = dns.message.from_wire(answer)
        except dns.exception.DNSException:
            return
        qnames = [q.name.to_text(omit_final_dot=True) for q in msg.question]
        for rrset in msg.answer:
            if rrset.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
                continue
            owner = rrset.name.to_text(omit_final_dot=True)
            for rd in rrset:
                ip = str(ipaddress.ip_address(rd.address))
                for name in {owner, *qnames}:  # a CNAME chain pins to the name the app asked for
                    self.pins.add(ip, name, float(rrset.ttl))


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            if not buf:
                return b""
            raise OSError("connection closed mid-message")
        buf += chunk
    return buf
