"""A real back-end app for the CNAF tests: uvicorn serving a small ASGI echo app on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from typing import Any

import uvicorn


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()  # connect
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo:" + (msg.get("text") or "")})
    h = hashlib.sha256()
    size = 0
    while True:
        msg = await receive()
        body = msg.get("body", b"")
        size += len(body)
        h.update(body)
        if not msg.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        for i in range(5):
            await send({"type": "http.response.body", "body": b"part%d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    doc = {
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body_len": size,
        "body_sha256": h.hexdigest(),
    }
    out = json.dumps(doc).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": out})


class Backend:
    """uvicorn on 127.0.0.1, port 0, in a thread of its own."""

    def __init__(self) -> None:
        self.config = uvicorn.Config(
            echo_app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", ws="websockets-sansio"
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = 0

    def start(self) -> Backend:
        self.thread.start()
        for _ in range(500):
            if self.server.started and self.server.servers:
                break
            threading.Event().wait(0.01)
        else:
            raise RuntimeError("backend did not start")
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def run_loop_in_thread() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    import uvloop

    loop = uvloop.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    return loop, t
