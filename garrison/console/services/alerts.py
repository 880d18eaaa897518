"""Alert delivery to a webhook and to syslog (RFC 5424 over UDP or TCP).

Ingestion only calls `submit()`, which filters by severity and enqueues without waiting; each output
has its own bounded queue and worker, so a dead webhook retrying with backoff delays neither
ingestion nor syslog. When a queue is full, alerts are dropped and counted (metric), never blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable

import httpx

from garrison.console.services.alert_settings import AlertSettings, SyslogOutput, WebhookOutput
from garrison.policy.audit import SEVERITY_ORDER, AuditEvent

log = logging.getLogger("garrison.console.alerts")
QUEUE_LIMIT = 10_000
_SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5}


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def format_rfc5424(event: AuditEvent, facility: int, hostname: str) -> bytes:
    pri = facility * 8 + _SYSLOG_SEVERITY[event.severity]
    ts = (
        dt.datetime.fromtimestamp(event.time, dt.UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )
    params = {
        "id": event.id,
        "app": event.app_name,
        "defender": event.defender_id,
        "type": event.type,
        "effect": event.effect,
        "severity": event.severity,
        "rule": event.rule,
        "control": event.control,
    }
    sd = "[garrison@32473 " + " ".join(f'{k}="{_sd_escape(v)}"' for k, v in params.items()) + "]"
    msg = " ".join(event.message.split()) or f"{event.type} {event.effect}"
    return f"<{pri}>1 {ts} {hostname[:255] or '-'} garrison - {event.type} {sd} {msg}".encode()


class _Output:
    """One queue + one worker task for one destination."""

    def __init__(
        self, name: str, send: Callable[[AuditEvent], Awaitable[None]], on_drop: Callable[[str], None]
    ) -> None:
        self.name = name
        self.send = send
        self.on_drop = on_drop
        self.queue: asyncio.Queue[AuditEvent] = asyncio.Queue(QUEUE_LIMIT)
        self.task = asyncio.create_task(self._run())

    def offer(self, event: AuditEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.on_drop(self.name)

    async def _run(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await self.send(event)
            except Exception as exc:
                log.warning("alert output %s failed for %s: %s", self.name, event.id, exc)
                self.on_drop(self.name)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class WebhookSender:
    def __init__(self, cfg: WebhookOutput, *, backoff_s: float = 0.5) -> None:
        self.cfg = cfg
        self.backoff_s = backoff_s
        self.client = httpx.AsyncClient(timeout=10.0, follow_redirects=False)

    async def __call__(self, event: AuditEvent) -> None:
        body = event.model_dump_json().encode()
        headers = {"content-type": "application/json", "x-garrison-event-id": event.id}
        if self.cfg.secret:
            headers["x-garrison-signature"] = signature(self.cfg.secret, body)
        delay = self.backoff_s
        for attempt in range(1, self.cfg.max_attempts + 1):
            try:
                resp = await self.client.post(self.cfg.url, content=body, headers=headers)
                if resp.status_code < 300:
                    return
                reason = f"HTTP {resp.status_code}"
                if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                    raise RuntimeError(f"webhook refused the alert: {reason}")
            except httpx.HTTPError as exc:
                reason = str(exc) or type(exc).__name__
            if attempt == self.cfg.max_attempts:
                raise RuntimeError(f"webhook gave up after {attempt} attempts: {reason}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def close(self) -> None:
        await self.client.aclose()


class SyslogSender:
    def __init__(self, cfg: SyslogOutput) -> None:
        self.cfg = cfg
        self.hostname = socket.gethostname()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.StreamWriter | None = None

    async def __call__(self, event: AuditEvent) -> None:
        line = format_rfc5424(event, self.cfg.facility, self.hostname)
        if self.cfg.protocol == "udp":
            if self._udp is None:
                loop = asyncio.get_running_loop()
                self._udp, _ = await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, remote_addr=(self.cfg.host, self.cfg.port)
                )
            self._udp.sendto(line)
            return
        for attempt in range(2):  # reconnect once if the collector closed the connection
            try:
                writer = self._tcp
                if writer is None:
                    conn = await asyncio.wait_for(asyncio.open_connection(self.cfg.host, self.cfg.port), 10.0)
                    writer = conn[1]
                    self._tcp = writer
                writer.write(b"%d %s" % (len(line), line))  # RFC 6587 octet counting
                await writer.drain()
                return
            except OSError:
                self._tcp = None
                if attempt:
                    raise

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()


class AlertDispatcher:
    def __init__(self, on_drop: Callable[[str], None] | None = None) -> None:
        self.settings = AlertSettings()
        self.on_drop = on_drop or (lambda _name: None)
        self._outputs: list[tuple[_Output, WebhookSender | SyslogSender]] = []

    async def configure(self, settings: AlertSettings) -> None:
        await self.close()
        self.settings = settings
        if settings.webhook is not None and settings.webhook.enabled:
            w = WebhookSender(settings.webhook)
            self._outputs.append((_Output("webhook", w, self.on_drop), w))
        if settings.syslog is not None and settings.syslog.enabled:
            s = SyslogSender(settings.syslog)
            self._outputs.append((_Output("syslog", s, self.on_drop), s))

    def submit(self, events: list[AuditEvent]) -> None:
        if not self._outputs:
            return
        floor = SEVERITY_ORDER[self.settings.min_severity]
        for ev in events:
            if SEVERITY_ORDER[ev.severity] >= floor:
                for out, _ in self._outputs:
                    out.offer(ev)

    async def close(self) -> None:
        for out, sender in self._outputs:
            await out.close()
            await sender.close()
        self._outputs = []
