"""Start-up order: the CNAF listens on $PORT before the app does. Requests that arrive before the app
first accepts a connection wait for it (bounded by `startup_grace_s`), with no "unreachable" warning;
once the app has been up, or after the grace, a refused connect is a 502 and a warning."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from garrison.cnaf.proxy import serve
from garrison.policy.cnaf import CnafControls


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return data


async def _app(port: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


def test_requests_wait_for_a_starting_app(caplog: pytest.LogCaptureFixture) -> None:
    app_port = _free_port()

    async def run() -> tuple[bytes, bytes]:
        proxy = await serve(
            "127.0.0.1", 0, "127.0.0.1", app_port, CnafControls, lambda e: None, startup_grace_s=30
        )
        try:
            early = asyncio.create_task(_get(proxy.port))  # the app is not listening yet
            await asyncio.sleep(0.8)
            assert not early.done()
            app = await _app(app_port)
            first = await early
            app.close()
            await app.wait_closed()
            # the app went away after it had been up: that is worth a warning and a 502
            later = await _get(proxy.port)
            return first, later
        finally:
            proxy.close()
            await proxy.wait_closed()

    with caplog.at_level(logging.INFO, logger="garrison.cnaf.proxy"):
        first, later = asyncio.run(run())
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"hello"), first
    assert later.startswith(b"HTTP/1.1 502"), later
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0], warnings
    assert any("waiting for the app" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_wait_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    app_port = _free_port()  # nothing ever listens here

    async def run() -> bytes:
        proxy = await serve(
            "127.0.0.1", 0, "127.0.0.1", app_port, CnafControls, lambda e: None, startup_grace_s=1.0
        )
        try:
            return await _get(proxy.port)
        finally:
            proxy.close()
            await proxy.wait_closed()

    with caplog.at_level(logging.INFO, logger="garrison.cnaf.proxy"):
        out = asyncio.run(run())
    assert out.startswith(b"HTTP/1.1 502"), out
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "did not listen" in warnings[0], warnings
