"""The inline reverse proxy: asyncio protocols + httptools (llhttp) parsing, uvloop when available.

Why protocols and not streams or aiohttp: the design measurements (outside this repository) had raw
asyncio + httptools at ~90% of a bare back end while aiohttp managed ~20%. Each client connection gets one upstream connection
(keep-alive pairs 1:1, no pool to get wrong). Requests are re-serialised from the parsed head, so
the app only ever sees what the strict parser understood (no smuggling through ambiguous framing);
responses are relayed byte for byte and parsed only to find where each one ends, which keeps
locally generated answers (403/429) in order behind pipelined responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httptools

from garrison.cnaf.detect.protocol import classify_parser_error
from garrison.cnaf.fields import body_inspectable
from garrison.cnaf.firewall import AuditSink, ControlsGetter, Firewall, Verdict, error_response
from garrison.cnaf.request import HttpRequest

log = logging.getLogger(__name__)

_LINGER_S = 2.0
HEAD_TIMEOUT_S = 30.0  # a request head must arrive within this (slowloris)
IDLE_TIMEOUT_S = 120.0  # keep-alive connection with nothing in flight
_SWEEP_S = 5.0
_HEAD_LIMIT_WITHOUT_POLICY = 64 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _HeadTooLarge(Exception):
    pass


@dataclass(slots=True)
class _Slot:
    """One response the client is owed, in request order: from the app, or made here."""

    local: bytes | None = None
    head: bool = False
    upgrade: bool = False


class _ResponseTracker:
    """httptools callbacks for the upstream direction; only message ends matter."""

    __slots__ = ("conn",)

    def __init__(self, conn: _ClientConn) -> None:
        self.conn = conn

    def on_message_complete(self) -> None:
        self.conn._response_complete()


class _Upstream(asyncio.Protocol):
    def __init__(self, conn: _ClientConn) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports don't subclass it

    def data_received(self, data: bytes) -> None:
        self.conn._upstream_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn._upstream_lost()

    def pause_writing(self) -> None:
        self.conn._pause_client_reading("upstream")

    def resume_writing(self) -> None:
        self.conn._resume_client_reading("upstream")


class _ClientConn(asyncio.Protocol):
    def __init__(self, proxy: CnafProxy) -> None:
        self.proxy = proxy
        self.fw = proxy.firewall
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer_ip = ""
        self.parser = httptools.HttpRequestParser(self)
        self.resp_parser = httptools.HttpResponseParser(_ResponseTracker(self))
        self.up: _Upstream | None = None
        self.up_pending: list[bytes] | None = None  # bytes queued while connecting
        self.slots: deque[_Slot] = deque()
        self.tunnel = False
        self.closing = False
        self.client_eof = False
        self.read_paused: set[str] = set()
        # per request
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.head_limit = _HEAD_LIMIT_WITHOUT_POLICY
        self.state = "idle"  # idle | head | buffering | streaming | blocked
        self.req: HttpRequest | None = None
        self.body: list[bytes] = []
        self.body_size = 0
        self.body_limit = 0
        self.chunked = False
        self.sent_continue = False
        self.head_started = 0.0
        self.head_buf = b""
        self.last_active = self.loop.time()

    # -- client side ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports don't subclass it
        peer = transport.get_extra_info("peername")
        self.peer_ip = str(peer[0]) if peer else ""
        self.proxy.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy.connections.discard(self)
        self.closing = True
        if self.up is not None and self.up.transport is not None:
            self.up.transport.close()

    def eof_received(self) -> bool | None:
        """The client half-closed (`shutdown(SHUT_WR)` after its last request): it still reads
        the answers it is owed, so the connection stays open until they are written."""
        if self.tunnel:
            up = self.up.transport if self.up is not None else None
            if up is not None and up.can_write_eof():
                up.write_eof()
            return True
        self.client_eof = True
        return True if self.slots else None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_active = self.loop.time()
        if self.tunnel:
            self._to_upstream(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = int(exc.args[0]) if exc.args else len(data)
            self.tunnel = True
            if not self.closing and offset < len(data):
                self._to_upstream(data[offset:])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__ or exc.__cause__
            if isinstance(cause, _HeadTooLarge):
                self._refuse(431, "request head too large")
            elif not self.closing:
                log.exception("CNAF proxy callback failed")
                self._refuse(400, "malformed request")
        except httptools.HttpParserError as exc:
            if not self.closing:
                self._refuse(400, classify_parser_error(str(exc)))

    def pause_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.resume_reading()

    def _pause_client_reading(self, why: str) -> None:
        if not self.read_paused and self.transport is not None:
            self.transport.pause_reading()
        self.read_paused.add(why)

    def _resume_client_reading(self, why: str) -> None:
        self.read_paused.discard(why)
        if not self.read_paused and self.transport is not None and not self.closing:
            self.transport.resume_reading()

    # -- httptools request callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.head_started = self.last_active
        self.url = b""
        self.headers = []
        self.head_size = 0
        self.state = "head"
        self.body = []
        self.body_size = 0
        self.chunked = False
        self.sent_continue = False
        controls = self.fw.controls_getter()
        self.head_limit = controls.max_header_bytes if controls is not None else _HEAD_LIMIT_WITHOUT_POLICY

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > self.head_limit:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.head_limit:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        if self.closing:
            return
        p = self.parser
        req = HttpRequest(
            method=p.get_method().decode("latin-1"),
            target=self.url.decode("latin-1"),
            version=p.get_http_version(),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.headers],
            peer_ip=self.peer_ip,
        )
        self.req = req
        has_body = False
        expect = False
        ctype = ""
        for k, v in self.headers:
            lk = k.lower()
            if lk == b"transfer-encoding":
                self.chunked = has_body = True
            elif lk == b"content-length":
                has_body = v.strip() not in (b"0", b"")
            elif lk == b"expect":
                expect = v.strip().lower() == b"100-continue"
            elif lk == b"content-type":
                ctype = v.decode("latin-1")
        controls = self.fw.controls_getter()
        if controls is None or not controls.enabled:
            self._forward_head()
            self.state = "streaming"
            return
        if has_body and not p.should_upgrade() and body_inspectable(ctype):
            self.state = "buffering"
            self.body_limit = controls.max_body_inspect_bytes
            if expect and not self.slots:
                self.sent_continue = True
                assert self.transport is not None
                self.transport.write(_CONTINUE)
            return
        self._decide_and_forward()

    def on_body(self, body: bytes) -> None:
        if self.state == "streaming":
            self._forward_body(body)
        elif self.state == "buffering":
            self.body.append(body)
            self.body_size += len(body)
            if self.body_size >= self.body_limit:
                self._decide_and_forward(truncated=True)

    def on_message_complete(self) -> None:
        if self.state == "buffering":
            self._decide_and_forward(complete=True)
        elif self.state == "streaming" and self.chunked:
            self._to_upstream(b"0\r\n\r\n")
        if self.state != "blocked":
            self.state = "idle"

    # -- decisions and forwarding ------------------------------------------------------------------
    def _decide_and_forward(self, truncated: bool = False, complete: bool = False) -> None:
        req = self.req
        assert req is not None
        if self.body:
            req.body = b"".join(self.body)
            req.body_truncated = truncated
        try:
            verdict = self.fw.check(req)
        except Exception:  # a detector bug must not take the app down: forward and log
            log.exception("CNAF inspection failed; forwarding request")
            verdict = Verdict()
        if verdict.status is not None:
            self._block(verdict.response)
            return
        self.state = "streaming"
        out = self._head_bytes()
        if self.body:  # head and the inspected body in one write (one syscall)
            self.body = []
            out += self._body_bytes(req.body)
        if complete and self.chunked:
            out += b"0\r\n\r\n"
        self._to_upstream(out)

    def _forward_head(self) -> None:
        self._to_upstream(self._head_bytes())

    def _head_bytes(self) -> bytes:
        req = self.req
        assert req is not None
        parts = [self.parser.get_method(), b" ", self.url, b" HTTP/", req.version.encode(), b"\r\n"]
        strip_expect = self.sent_continue
        for k, v in self.headers:
            if strip_expect and k.lower() == b"expect":
                continue
            parts += (k, b": ", v, b"\r\n")
        parts.append(b"\r\n")
        upgrade = bool(self.parser.should_upgrade())
        self.slots.append(_Slot(head=req.method == "HEAD", upgrade=upgrade))
        return b"".join(parts)

    def _body_bytes(self, data: bytes) -> bytes:
        if not data:
            return b""
        return b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data

    def _forward_body(self, data: bytes) -> None:
        if data:
            self._to_upstream(self._body_bytes(data))

    def _to_upstream(self, data: bytes) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.write(data)
            return
        if self.up_pending is None:
            self.up_pending = [data]
            self._pause_client_reading("connect")
            self.loop.create_task(self._connect())
        else:
            self.up_pending.append(data)

    async def _connect(self) -> None:
        proxy = self.proxy
        try:
            up = await proxy.connect_upstream(lambda: _Upstream(self))
        except OSError as exc:
            proxy.upstream_failed(exc)
            self.up_pending = None
            self.slots.clear()
            self._send_local_and_close(error_response(502, "The application is not reachable."))
            return
        if self.transport is None or self.transport.is_closing():  # the client went away meanwhile
            if up.transport is not None:
                up.transport.close()
            return
        self.up = up
        assert up.transport is not None
        pending, self.up_pending = self.up_pending or [], None
        up.transport.writelines(pending)
        self._resume_client_reading("connect")

    def _block(self, response: bytes) -> None:
        self.state = "blocked"
        self.closing = True
        self.slots.append(_Slot(local=response))
        self._flush_local()

    def _refuse(self, status: int, reason: str) -> None:
        """The strict parser gave up on this request: answer it here, audit it, never forward it."""
        p = self.parser
        try:
            method = p.get_method().decode("latin-1")
        except Exception:  # the request line itself was unparsable
            method = "?"
        req = HttpRequest(
            method=method,
            target=self.url.decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.headers],
            peer_ip=self.peer_ip,
        )
        verdict = self.fw.protocol_error(req, reason, status)
        self._block(verdict.response)

    def sweep(self, now: float) -> None:
        """Called every few seconds: drop slow heads (408) and long-idle keep-alive connections."""
        if self.closing or self.tunnel:
            return
        if self.state == "head" and now - self.head_started > HEAD_TIMEOUT_S:
            self._block(error_response(408, "request head not received in time"))
        elif self.state == "idle" and not self.slots and now - self.last_active > IDLE_TIMEOUT_S:
            self.closing = True
            if self.transport is not None:
                self.transport.close()

    def _flush_local(self) -> None:
        """Write locally made answers that are now at the head of the queue."""
        while self.slots and self.slots[0].local is not None:
            slot = self.slots.popleft()
            assert slot.local is not None
            self._send_local_and_close(slot.local)
            return

    def _send_local_and_close(self, response: bytes) -> None:
        self.closing = True
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(response)
        if self.up is not None and self.up.transport is not None:
            self.up.transport.close()
        # Lingering close: half-close and drain what the client still sends, so it reads our
        # answer instead of a connection reset.
        if t.can_write_eof():
            with contextlib.suppress(OSError):
                t.write_eof()
            self.read_paused.clear()
            t.resume_reading()
            self.loop.call_later(_LINGER_S, t.close)
        else:
            t.close()

    # -- upstream side ---------------------------------------------------------------------------
    def _upstream_data(self, data: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(data)
        if self.tunnel and not self.slots:
            return
        while data:
            if self.slots and self.slots[0].head and self.slots[0].local is None:
                self.head_buf += data
                idx = self.head_buf.find(b"\r\n\r\n")
                if idx < 0:
                    return
                rest = self.head_buf[idx + 4 :]
                status = self.head_buf[9:12]
                self.head_buf = b""
                if not status.startswith(b"1"):
                    self._response_complete()
                data = rest
                continue
            try:
                self.resp_parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self.tunnel = True
                if self.slots:
                    self.slots.popleft()
            except httptools.HttpParserError as exc:
                log.warning("CNAF: unparsable response from the app (%s); closing", exc)
                self.closing = True
                t.close()
            return

    def _response_complete(self) -> None:
        code = self.resp_parser.get_status_code()
        if 100 <= code < 200 and code != 101 and not (self.slots and self.slots[0].head):
            return
        if not self.slots:
            return
        slot = self.slots.popleft()
        if slot.upgrade and code != 101:
            # the app declined the upgrade but the client side already switched to raw bytes
            self.closing = True
            if self.transport is not None:
                self.transport.close()
            return
        self._flush_local()
        if self.client_eof and not self.slots and self.transport is not None:
            self.closing = True
            self.transport.close()  # after the buffered answers are written

    def _upstream_lost(self) -> None:
        self.up = None
        t = self.transport
        if t is None or t.is_closing():
            return
        if self.slots and self.slots[0].local is not None:
            self._flush_local()
        elif self.slots or not self.closing:
            # the app closed: after its last response (keep-alive ended) or in the middle of one
            self.closing = True
            t.close()


class CnafProxy:
    """A running proxy; `port` is the bound port (useful with port 0)."""

    def __init__(
        self, firewall: Firewall, upstream_host: str, upstream_port: int, startup_grace_s: float = 0.0
    ) -> None:
        self.firewall = firewall
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        # The app starts after the proxy listens: until it has accepted a first connection (for at most
        # startup_grace_s after the proxy started), a refused connect is retried, not reported.
        self.startup_grace_s = startup_grace_s
        self.upstream_seen = False
        self._started_at = 0.0
        self._waiting_noted = False
        self.server: asyncio.Server | None = None
        self.connections: set[_ClientConn] = set()
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        sock = self.server.sockets[0]
        return int(sock.getsockname()[1])

    @property
    def sockets(self) -> list[Any]:
        return list(self.server.sockets) if self.server is not None else []

    async def connect_upstream(self, factory: Callable[[], _Upstream]) -> _Upstream:
        """Connect to the app; while it has never listened yet, wait for it (bounded) instead of failing."""
        loop = asyncio.get_running_loop()
        delay = 0.02
        while True:
            try:
                _, up = await loop.create_connection(factory, self.upstream_host, self.upstream_port)
            except ConnectionRefusedError:
                if self.upstream_seen or loop.time() - self._started_at >= self.startup_grace_s:
                    raise
                if not self._waiting_noted:
                    self._waiting_noted = True
                    log.info(
                        "CNAF: waiting for the app to listen on %s:%s (up to %.0f s after start)",
                        self.upstream_host, self.upstream_port, self.startup_grace_s,
                    )  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)
                continue
            self.upstream_seen = True
            return up

    def upstream_failed(self, exc: OSError) -> None:
        where = f"{self.upstream_host}:{self.upstream_port}"
        if self.upstream_seen or not self.startup_grace_s:
            log.warning("CNAF: upstream %s unreachable: %s", where, exc)
        else:
            log.warning(
                "CNAF: the app did not listen on %s within %.0f s of start: %s",
                where,
                self.startup_grace_s,
                exc,
            )

    async def start(self, host: str, port: int) -> CnafProxy:
        loop = asyncio.get_running_loop()
        self._started_at = loop.time()
        self.server = await loop.create_server(lambda: _ClientConn(self), host, port, backlog=1024)
        self._sweeper = loop.create_task(self._sweep())
        return self

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_SWEEP_S)
            now = loop.time()
            for conn in list(self.connections):
                conn.sweep(now)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.server is not None:
            self.server.close()
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.close()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()


async def serve(
    listen_host: str,
    listen_port: int,
    upstream_host: str,
    upstream_port: int,
    controls_getter: ControlsGetter,
    audit: AuditSink,
    startup_grace_s: float = 0.0,
) -> CnafProxy:
    """Start the CNAF on the running loop; the defender calls this with PORT and the app's internal port.

    `startup_grace_s`: requests that arrive before the app first accepts a connection wait for it
    (retrying the connect) for up to this long after start, instead of getting a 502 and a warning.

    `controls_getter` is called per request (return None to pass traffic through uninspected);
    `audit` receives every AuditEvent (type "cnaf") and must not block. The OWASP CRS rule set
    loads in the background (a missing one is reported); until it is ready the CNAF's own
    detectors inspect alone. So does the detectors' Hyperscan prefilter (same verdicts, faster).
    """
    from garrison.cnaf import crs
    from garrison.cnaf.engine import start_prefilter

    crs.start_loading()
    start_prefilter()
    fw = Firewall(controls_getter, audit)
    return await CnafProxy(fw, upstream_host, upstream_port, startup_grace_s).start(listen_host, listen_port)
