"""ModSecurity v3 + the installed OWASP CRS on loopback: the comparison point of the CNAF benchmarks.

libmodsecurity (the `libmodsecurity` wheel, `pip install -e '.[bench]'`) with Debian's CRS
(`/usr/share/modsecurity-crs`) at a paranoia level, anomaly threshold 5, behind a small httptools
server. Two shapes:

* no `--upstream`: it answers every request itself (the status ModSecurity decided, then closes) —
  what bench/cnaf_crs.py replays the CRS regression tests against;
* `--upstream PORT`: a keep-alive reverse proxy in front of the app, as the CNAF proxy is — each
  request is inspected, then its bytes are forwarded over the client connection's own upstream
  connection and the answer relayed (one request in flight per connection, as wrk sends them) —
  what bench/cnaf_throughput.py measures.

    python bench/cnaf_modsec.py PARANOIA [--crs-rules DIR] [--upstream PORT]   # prints its port
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path

import httptools

Verdict = Callable[[str, str, str, list[tuple[str, str]], bytes], int]
DEFAULT_CRS_RULES = Path("/usr/share/modsecurity-crs/rules")


def modsec_rules(paranoia: int, crs_dir: Path) -> str:
    # 910 (IP reputation) needs GeoIP, which the wheel's libmodsecurity is built without.
    includes = "\n".join(f"Include {p}" for p in sorted(crs_dir.glob("*.conf")) if "-910-" not in p.name)
    return f"""
SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit 13107200
SecRequestBodyNoFilesLimit 131072
SecRequestBodyLimitAction ProcessPartial
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\\+|/)|text/)xml" \
  "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/json" \
  "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecAction "id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level={paranoia}"
Include /etc/modsecurity/crs/crs-setup.conf
{includes}
"""


def make_verdict(paranoia: int, crs_dir: Path) -> Verdict:
    """(method, url, version, headers, body) → the status ModSecurity decides (200: pass)."""
    from libmodsecurity import ModSecurity, RulesSet, Transaction

    engine = ModSecurity()
    engine.set_log_callback(lambda _line: None)  # no server log (else a stderr line per warning)
    rules = RulesSet()
    if rules.load(modsec_rules(paranoia, crs_dir)) < 0:
        raise SystemExit(f"ModSecurity rules: {rules.get_parser_error()}")

    def verdict(method: str, url: str, version: str, headers: list[tuple[str, str]], body: bytes) -> int:
        tx = Transaction(engine, rules)
        tx.process_connection("127.0.0.1", 40000, "127.0.0.1", 80)
        tx.process_uri(url, method, version)
        for k, v in headers:
            tx.add_request_header(k, v)
        tx.process_request_headers()
        it = tx.intervention()
        if it is None or not it.disruptive:
            if body:
                tx.append_request_body(body)
            tx.process_request_body()
            it = tx.intervention()
        return it.status if it is not None and it.disruptive else 200

    return verdict


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class RequestCollector:
    """httptools callbacks collecting one request's URL, headers and body (this server and the
    in-process replay of bench/cnaf_crs.py / cnaf_crs_tune.py parse with them)."""

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body


class _Handler(RequestCollector, asyncio.Protocol):
    def __init__(self, verdict: Verdict, upstream_port: int | None) -> None:
        self.verdict = verdict
        self.upstream_port = upstream_port
        self.up: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        self.p = httptools.HttpRequestParser(self)
        self.raw = bytearray()
        self.on_message_begin()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.up is not None:
            self.up.close()

    def on_message_complete(self) -> None:
        status = self.verdict(
            self.p.get_method().decode(),
            self.url.decode("latin-1"),
            self.p.get_http_version(),
            self.headers,
            bytes(self.body),
        )
        if self.upstream_port is None or status != 200:
            self._answer(status)
            return
        raw = bytes(self.raw)
        self.raw.clear()
        if self.up is not None:
            self.up.write(raw)
        else:
            self.t.pause_reading()
            asyncio.get_running_loop().create_task(self._connect(raw))

    async def _connect(self, raw: bytes) -> None:
        assert self.upstream_port is not None
        loop = asyncio.get_running_loop()
        up, _ = await loop.create_connection(lambda: _Upstream(self.t), "127.0.0.1", self.upstream_port)
        self.up = up
        up.write(raw)
        self.t.resume_reading()

    def _answer(self, status: int) -> None:
        self.t.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % status)
        self.t.close()

    def data_received(self, data: bytes) -> None:
        if self.upstream_port is not None:
            self.raw += data
        try:
            self.p.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.on_message_complete()
        except httptools.HttpParserError:
            self._answer(400)


def serve(paranoia: int, crs_dir: Path, upstream_port: int | None = None) -> None:
    """Serve until killed; the bound port is printed on stdout first."""
    verdict = make_verdict(paranoia, crs_dir)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Handler(verdict, upstream_port), "127.0.0.1", 0, backlog=1024
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paranoia", type=int, choices=(1, 2, 3, 4))
    ap.add_argument("--crs-rules", type=Path, default=DEFAULT_CRS_RULES)
    ap.add_argument("--upstream", type=int, help="the app's port: forward what passes (keep-alive proxy)")
    args = ap.parse_args()
    serve(args.paranoia, args.crs_rules, args.upstream)
