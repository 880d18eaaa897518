from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from garrison.cnaf.proxy import CnafProxy, serve
from garrison.policy.audit import AuditEvent
from garrison.policy.cnaf import ATTACK_CLASSES, CnafControls
from tests.cnaf.backend import Backend, run_loop_in_thread


@pytest.fixture(scope="session")
def backend() -> Iterator[Backend]:
    b = Backend().start()
    yield b
    b.stop()


@dataclass
class ProxyHandle:
    port: int
    controls: list[CnafControls | None]
    events: list[AuditEvent] = field(default_factory=list)
    proxy: CnafProxy | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def set(self, controls: CnafControls | None) -> None:
        self.controls[0] = controls


@pytest.fixture(scope="session")
def _loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop, t = run_loop_in_thread()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    t.join(timeout=5)


@pytest.fixture
def make_proxy(backend: Backend, _loop: asyncio.AbstractEventLoop) -> Iterator[Callable[..., ProxyHandle]]:
    started: list[CnafProxy] = []

    def make(controls: CnafControls | None = None, **kw: object) -> ProxyHandle:
        if controls is None and not kw.get("no_policy"):
            controls = CnafControls(effects=dict.fromkeys(ATTACK_CLASSES, "prevent"))
        handle = ProxyHandle(port=0, controls=[controls])
        fut = asyncio.run_coroutine_threadsafe(
            serve(
                "127.0.0.1", 0, "127.0.0.1", backend.port, lambda: handle.controls[0], handle.events.append
            ),
            _loop,
        )
        proxy = fut.result(timeout=10)
        started.append(proxy)
        handle.port = proxy.port
        handle.proxy = proxy
        handle.loop = _loop
        return handle

    yield make
    for p in started:
        asyncio.run_coroutine_threadsafe(_close(p), _loop).result(timeout=10)


async def _close(p: CnafProxy) -> None:
    p.close()
    await p.wait_closed()
