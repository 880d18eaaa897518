"""Alert outputs against real loopback listeners: webhook (retry + HMAC) and syslog over UDP and TCP."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.console.defender_client import bundle_fields, deliver
from tests.polling import until as _wait

RFC5424 = re.compile(rb"^<(\d+)>1 \S+ \S+ garrison - (\S+) \[garrison@32473 [^\]]*\] (.*)$")


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    calls = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).calls += 1
        if type(self).calls == 1:  # the first delivery fails: the console must retry
            self.send_response(503)
            self.end_headers()
            return
        type(self).received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_and_syslog(console):
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(20)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(1)
    tcp.settimeout(20)
    try:
        settings = {
            "min_severity": "high",
            "webhook": {"url": f"http://127.0.0.1:{hook.server_address[1]}/hook", "secret": "s3cret"},
            "syslog": {"host": "127.0.0.1", "port": udp.getsockname()[1], "protocol": "udp"},
        }
        with console.api() as c:
            r = c.put("/settings/alerts", json=settings)
            assert r.status_code == 200, r.text
            assert r.json()["webhook"]["secret"] == "********"
            assert c.put("/settings/alerts", json={"min_severity": "urgent"}).status_code == 422
            assert c.get("/settings/alerts").json()["webhook"]["secret"] == "********"
        app = "alert-" + uuid.uuid4().hex[:6]
        events = [
            {"id": uuid.uuid4().hex, "type": "process", "effect": "prevent", "severity": sev, "message": sev}
            for sev in ("low", "medium", "high", "critical")
        ]
        token = bundle_fields(console.install_bundle())["enrolment_token"]
        assert asyncio.run(deliver(console.ws_address, console.ca_pem, token, app, events)) == 4

        lines = [udp.recv(65535), udp.recv(65535)]
        parsed = [RFC5424.match(line) for line in lines]
        assert all(parsed), lines
        assert sorted(int(m.group(1)) for m in parsed) == [16 * 8 + 2, 16 * 8 + 3]  # local0.crit, local0.err
        assert all(m.group(2) == b"process" for m in parsed)

        _wait(lambda: len(_Hook.received) == 2)
        sevs = set()
        for headers, body in _Hook.received:
            expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
            assert headers["x-garrison-signature"] == expected
            sevs.add(json.loads(body)["severity"])
        assert sevs == {"high", "critical"} and _Hook.calls == 3  # one retried delivery

        # Syslog over TCP (octet counting); the masked secret sent back keeps the stored one.
        with console.api() as c:
            settings["syslog"] = {"host": "127.0.0.1", "port": tcp.getsockname()[1], "protocol": "tcp"}
            settings["webhook"]["secret"] = "********"
            assert c.put("/settings/alerts", json=settings).status_code == 200
        ev = [{"id": uuid.uuid4().hex, "type": "network", "effect": "alert", "severity": "critical"}]
        assert asyncio.run(deliver(console.ws_address, console.ca_pem, token, app, ev)) == 1
        conn, _ = tcp.accept()
        conn.settimeout(20)
        data = b""
        while b" " not in data or len(data) < int(data.split(b" ", 1)[0]) + len(data.split(b" ", 1)[0]) + 1:
            data += conn.recv(65535)
        length, frame = data.split(b" ", 1)
        assert int(length) == len(frame) and RFC5424.match(frame)
        conn.close()
        _wait(lambda: len(_Hook.received) == 3)
        headers, body = _Hook.received[-1]
        assert (
            headers["x-garrison-signature"]
            == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        )
    finally:
        hook.shutdown()
        udp.close()
        tcp.close()
