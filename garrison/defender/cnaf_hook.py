"""CNAF in front of the app: the defender listens on $PORT and the app gets an internal loopback port.

The proxy (garrison.cnaf.proxy.serve) runs on its own event loop thread, started by the unrestricted
supervisor, and reads the CNAF controls from the live rule on every request, so policy pushes apply
without a restart. If the selected rule has no enabled CNAF at start, nothing is interposed.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from garrison.defender.context import DefenderContext
from garrison.defender.supervisor import LaunchPlan
from garrison.policy.cnaf import CnafControls

# Cloud Foundry gives an app 60 s by default to start listening; until it first does, the CNAF holds
# requests (such as the platform's first health checks) instead of answering 502 and warning.
APP_START_GRACE_S = 60.0


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CnafHook:
    def __init__(self, ctx: DefenderContext, listen_port: int, app_port: int, host: str = "0.0.0.0") -> None:
        self.ctx = ctx
        self.listen_port = listen_port
        self.app_port = app_port
        self.host = host
        self.loop: asyncio.AbstractEventLoop | None = None
        self.proxy: Any = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="garrison-cnaf", daemon=True)

    def _controls(self) -> CnafControls | None:
        rule = self.ctx.rule()
        c = rule.cnaf if rule is not None else None
        return c if c is not None and c.enabled else None

    def _run(self) -> None:
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        from garrison.cnaf.proxy import serve

        try:
            self.proxy = loop.run_until_complete(
                serve(
                    self.host,
                    self.listen_port,
                    "127.0.0.1",
                    self.app_port,
                    self._controls,
                    self.ctx.audit,
                    startup_grace_s=APP_START_GRACE_S,
                )
            )
        except BaseException as exc:
            self.error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return

        def _close() -> None:
            if self.proxy is not None:
                self.proxy.close()
            loop.stop()

        loop.call_soon_threadsafe(_close)
        self._thread.join(5)


def start_cnaf(ctx: DefenderContext, plan: LaunchPlan, port: int) -> CnafHook:
    """Listen on `port`; the app's PORT becomes an internal loopback port."""
    app_port = free_loopback_port()
    plan.env["PORT"] = str(app_port)
    plan.env["GARRISON_CNAF_PUBLIC_PORT"] = str(port)
    hook = CnafHook(ctx, port, app_port, host=ctx_host(plan))
    hook.start()
    return hook


def ctx_host(plan: LaunchPlan) -> str:
    return plan.env.get("DEFENDER_CNAF_HOST", "0.0.0.0")
