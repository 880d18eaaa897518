"""Sending a cell's reports and events to the console (`/api/v1/hosts/<name>/...`).

Events wait in a bounded in-memory queue while the console is unreachable; what overflows is
counted and said in a compliance event, and a rescan on the next start finds file changes again."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import httpx

from garrison.host.model import CisReport, HostEvent
from garrison.scan.console import ConsoleConfig, ConsoleError
from garrison.scan.model import ScanReport

log = logging.getLogger("garrison.host")
QUEUE_MAX = 100_000
BATCH = 1000


class HostReporter:
    def __init__(self, cfg: ConsoleConfig, host: str) -> None:
        self.cfg, self.host = cfg, host
        self._queue: deque[HostEvent] = deque()
        self._lock = threading.Lock()
        self.dropped = 0

    def _post(self, path: str, body: Any) -> dict[str, Any]:
        try:
            with self.cfg.client() as c:
                r = c.post(f"/api/v1/hosts/{self.host}{path}", content=body, headers={
                    "content-type": "application/json"})
        except httpx.HTTPError as exc:
            raise ConsoleError(f"console {self.cfg.url} unreachable: {exc}") from exc
        if r.status_code >= 400:
            raise ConsoleError(f"console POST /hosts/{self.host}{path} answered {r.status_code}: {r.text[:300]}")
        return r.json()

    def send_cis(self, report: CisReport) -> dict[str, Any]:
        return self._post("/cis", report.model_dump_json())

    def send_scan(self, report: ScanReport) -> dict[str, Any]:
        return self._post("/scan", report.model_dump_json())

    def queue(self, event: HostEvent) -> None:
        with self._lock:
            if len(self._queue) >= QUEUE_MAX:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(event)

    def flush(self) -> int:
        """Send what is queued, in batches; on failure keep it for the next flush. Returns sent count."""
        sent = 0
        while True:
            with self._lock:
                if self.dropped:
                    self._queue.appendleft(HostEvent(
                        host=self.host, type="compliance", action="events_dropped", severity="high",
                        message=f"{self.dropped} host events dropped while the console was unreachable",
                    ))
                    self.dropped = 0
                batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]
            if not batch:
                return sent
            body = '{"events":[' + ",".join(e.model_dump_json() for e in batch) + "]}"
            try:
                self._post("/events", body)
            except ConsoleError as exc:
                log.warning("host events not delivered yet (%d queued): %s", len(self._queue), exc)
                return sent
            with self._lock:
                for _ in batch:
                    self._queue.popleft()
            sent += len(batch)
