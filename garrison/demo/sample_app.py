"""A deliberately naive sample web app for the demo: it will run a command or open a connection on request,
which is exactly what an attacker exploiting it would make it do, so the defender has something to stop.

Standard library only, so it runs anywhere the defender does.
"""

from __future__ import annotations

import html
import json
import os
import socket
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PAGE = """<!doctype html><title>Garrison sample app</title>
<h1>Garrison sample app</h1>
<p>Instance {instance} of <b>{name}</b>, protected by the Garrison app-embedded defender.</p>
<ul>
<li><a href="/run?cmd=date">/run?cmd=date</a> — run a program (allowed: date; denied: sh, curl, nc ...)</li>
<li><a href="/connect?host=127.0.0.1&port=25">/connect?host=127.0.0.1&amp;port=25</a> — open a TCP connection</li>
<li><a href="/search?q=1%27%20OR%20%271%27=%271">/search?q=...</a> — echo a query (CNAF inspects it)</li>
</ul>"""


class Handler(BaseHTTPRequestHandler):
    server_version = "garrison-sample/1"

    def _reply(self, code: int, body: object) -> None:
        data = (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/html" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/":
            app = json.loads(os.environ.get("VCAP_APPLICATION", "{}") or "{}")
            self._reply(
                200,
                PAGE.format(
                    instance=html.escape(str(app.get("instance_index", 0))),
                    name=html.escape(str(app.get("application_name", "sample"))),
                ),
            )
        elif url.path == "/run":
            argv = q.get("cmd", "date").split()
            try:
                out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
                self._reply(200, {"argv": argv, "exit": out.returncode, "stdout": out.stdout[-2000:]})
            except OSError as exc:
                self._reply(403, {"argv": argv, "error": f"{exc.strerror} (errno {exc.errno})"})
        elif url.path == "/connect":
            host, port = q.get("host", "127.0.0.1"), int(q.get("port", "80"))
            try:
                with socket.create_connection((host, port), timeout=5):
                    self._reply(200, {"connected": f"{host}:{port}"})
            except OSError as exc:
                self._reply(403, {"target": f"{host}:{port}", "error": f"{exc.strerror} (errno {exc.errno})"})
        elif url.path == "/search":
            self._reply(200, {"q": q.get("q", "")})
        elif url.path == "/healthz":
            self._reply(200, {"ok": True})
        else:
            self._reply(404, {"error": "not found"})

    def log_message(self, format: str, *args: object) -> None:
        print(f"sample-app: {self.address_string()} {format % args}", flush=True)


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"sample-app: listening on 127.0.0.1:{port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
