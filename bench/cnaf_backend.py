"""Back ends for bench/cnaf_throughput.py; each prints its port on stdout, then serves 200 + small JSON.

`raw`: a bare uvloop + httptools responder (no framework; the ceiling of what Python can serve).
`asgi`: uvicorn (httptools + uvloop) running a minimal ASGI app, i.e. a typical Python web app.

    python bench/cnaf_backend.py raw|asgi
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import httptools
import uvloop

BODY = b'{"ok":true,"service":"bench-backend"}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)


class Handler(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        self.transport.write(RESPONSE)  # type: ignore[attr-defined]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def _socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    return sock


async def raw_main() -> None:
    server = await asyncio.get_running_loop().create_server(Handler, sock=_socket(), backlog=1024)
    await server.serve_forever()


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "raw"
    if kind == "raw":
        uvloop.run(raw_main())
    elif kind == "asgi":
        import uvicorn

        sock = _socket()
        config = uvicorn.Config(
            asgi_app, log_level="warning", access_log=False, http="httptools", loop="uvloop", lifespan="off"
        )
        uvicorn.Server(config).run(sockets=[sock])
    else:
        raise SystemExit(f"unknown back end {kind!r}: raw | asgi")


if __name__ == "__main__":
    main()
