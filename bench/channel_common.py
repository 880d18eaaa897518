"""Shared by the channel benches: a real console channel server (console store + ChannelBackend)
running in a child process, driven over stdin/stdout lines so the bench process (the simulated
defenders) and the console do not share a Python interpreter — as in production.

Child protocol: it prints one JSON line {"port", "bundle"}; then for each stdin line:
  "push"  → store a new runtime policy revision, notify the channel, print the revision;
  "count PREFIX" → print how many stored events have ids starting with PREFIX;  "quit" → stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def bench_policy(revision_hint: int, n_rules: int = 20) -> Any:
    from garrison.policy.model import Rule, RuntimePolicy, Scope

    return RuntimePolicy(
        rules=[
            Rule(name=f"rule-{i}-{revision_hint}", scope=Scope(apps=[f"app-{i}-*"])) for i in range(n_rules)
        ]
    )


class _Discarding:
    """The console backend, except that events are dropped after the channel validated them: shows
    what the channel alone can carry."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def store_events(self, defender_id: str, events: Any) -> int:
        return len(events)


def open_console_backend(data_dir: Path, db: str | None) -> tuple[Any, Any, Any]:
    """(store, ConsoleContext, ConsoleChannelBackend) of a console data dir, as the console builds them."""
    from garrison.console.context import ConsoleContext
    from garrison.console.services.channel_backend import ConsoleChannelBackend
    from garrison.console.store.open import Store
    from garrison.pki import ensure_ca

    store = Store.open(db, data_dir)
    ctx = ConsoleContext.build(data_dir, store, ensure_ca(data_dir))
    return store, ctx, ConsoleChannelBackend(store, ctx.defenders, ctx.policies)


async def _serve(data_dir: Path, db: str | None, discard: bool = False) -> None:
    from sqlalchemy import func, select

    from garrison.channel.bundle import encode_bundle
    from garrison.channel.server import ChannelServer
    from garrison.console.store.tables import events
    from garrison.pki import server_ssl_context

    raise_fd_limit()
    store, ctx, backend = open_console_backend(data_dir, db)
    ca = ctx.ca
    cert, key = ca.issue_server_cert(data_dir, ["127.0.0.1"])
    if discard:
        backend = _Discarding(backend)
    server = ChannelServer(
        backend,
        server_ssl_context(cert, key, client_ca_pem=ca.cert_pem, client_cert="optional"),
        "127.0.0.1",
        0,
        policy_poll_interval=None,
    )
    await server.start()
    token = ctx.defenders.new_enrolment_token("bench")
    bundle = encode_bundle(
        ca_pem=ca.cert_pem, ws_address=f"wss://127.0.0.1:{server.port}", enrolment_token=token
    )
    print(json.dumps({"port": server.port, "bundle": bundle}), flush=True)
    loop = asyncio.get_running_loop()
    n = 0
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "push":
            n += 1
            pol = await asyncio.to_thread(ctx.policies.put_runtime, bench_policy(n), "bench")
            await server.notify_policy_changed()
            print(pol.revision, flush=True)
        elif line.startswith("count "):
            q = select(func.count()).select_from(events).where(events.c.event_id.startswith(line[6:]))
            with store.engine.connect() as c:
                print(c.execute(q).scalar_one(), flush=True)
        else:
            break
    await server.stop()


class ConsoleProcess:
    """The child console; `command()` sends one line and returns the answer line."""

    def __init__(self, db: str | None = None, *, plain_asyncio: bool = False, discard: bool = False) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="garrison-bench-")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        args = [sys.executable, __file__, "serve", "--data-dir", self.tmp.name]
        if db:
            args += ["--db", db]
        if plain_asyncio:
            args.append("--asyncio")
        if discard:
            args.append("--discard")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        hello = json.loads(self.proc.stdout.readline())
        self.port: int = hello["port"]
        self.bundle_text: str = hello["bundle"]

    def command(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, ValueError):
                self.command("quit")
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.tmp.cleanup()


def run(coro: Coroutine[Any, Any, None], *, plain: bool = False) -> None:
    """uvloop by default: the console's uvicorn picks it too when it is installed."""
    if plain:
        asyncio.run(coro)
    else:
        import uvloop

        uvloop.run(coro)


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return (
        f"(load average {one:.1f}/{five:.1f} on {os.cpu_count()} CPUs; other work on the box skews figures)"
    )


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["serve"])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--db", default=None)
    ap.add_argument("--asyncio", action="store_true", help="plain asyncio loop instead of uvloop")
    ap.add_argument("--discard", action="store_true", help="drop events after validation (channel only)")
    a = ap.parse_args()
    run(_serve(a.data_dir, a.db, a.discard), plain=a.asyncio)
