"""Channel test fixtures: a throw-away CA, TLS contexts, and a channel server on an ephemeral port."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from garrison.channel.bundle import InstallBundle, decode_bundle, encode_bundle
from garrison.channel.server import ChannelServer
from garrison.pki.ca import CertificateAuthority, ensure_ca, server_ssl_context
from tests.channel.sqlite_backend import SqliteBackend

T = TypeVar("T")
TOKEN = "test-enrolment-token-0123456789"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Pki:
    ca: CertificateAuthority
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        return server_ssl_context(self.cert, self.key, client_ca_pem=self.ca.cert_pem, client_cert="optional")

    def bundle(self, port: int, token: str = TOKEN) -> InstallBundle:
        return decode_bundle(
            encode_bundle(
                ca_pem=self.ca.cert_pem, ws_address=f"wss://127.0.0.1:{port}", enrolment_token=token
            )
        )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("channel-pki")
    ca = ensure_ca(d)
    cert, key = ca.issue_server_cert(d, ["127.0.0.1", "localhost"])
    return Pki(ca, cert, key)


@pytest.fixture
def backend(tmp_path: Path, pki: Pki) -> SqliteBackend:
    return SqliteBackend(tmp_path / "console.db", pki.ca, TOKEN)


@contextlib.asynccontextmanager
async def running_server(backend: SqliteBackend, pki: Pki, port: int = 0) -> AsyncIterator[ChannelServer]:
    server = ChannelServer(backend, pki.server_context(), "127.0.0.1", port, policy_poll_interval=None)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class ServerThread:
    """A channel server on its own event loop thread, for tests of the threaded client."""

    def __init__(self, backend: SqliteBackend, pki: Pki, port: int = 0) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = ChannelServer(
            backend, pki.server_context(), "127.0.0.1", port, policy_poll_interval=None
        )
        self.call(self.server.start())

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def server_thread(backend: SqliteBackend, pki: Pki) -> Iterator[ServerThread]:
    st = ServerThread(backend, pki)
    yield st
    if not st.loop.is_closed():
        st.stop()
