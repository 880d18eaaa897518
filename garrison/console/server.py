"""Run the console: HTTPS (API + UI, uvicorn) and WSS (defender channel) in one event loop.

Sockets are bound before serving so `--port 0` works; the real addresses are then written to
`<data-dir>/console.json` (atomically) for tests and tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from garrison.channel.protocol import CommandResult
from garrison.channel.rate import limits_from_env
from garrison.channel.server import ChannelServer
from garrison.console.api.app import asgi
from garrison.console.api.settings import load_alert_settings
from garrison.console.config import ConsoleConfig, url_host
from garrison.console.connections import (
    fd_admission,
    guarded_protocol,
    https_limits_from_env,
    raise_nofile_limit,
    with_handshake_timeout,
)
from garrison.console.context import ConsoleContext
from garrison.console.memory import rss_bytes, trim_while_busy, tune_gc, tune_malloc
from garrison.console.replicas import install_shared_ca, single_console_lock
from garrison.console.services.channel_backend import ConsoleChannelBackend
from garrison.console.services.cluster import ClusterService
from garrison.console.store.open import Store
from garrison.pki import ensure_ca, server_ssl_context
from garrison.policy.audit import AuditEvent

log = logging.getLogger("garrison.console")
STATE_FILE = "console.json"
COMMAND_TIMEOUT_S = 30.0


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(512)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `serve()` installs ours so shutdown runs our clean-up
    (uvicorn would re-raise SIGTERM after serving, killing the process before it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _write_state(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def prepare(cfg: ConsoleConfig) -> tuple[ConsoleContext, Path, Path]:
    """CA, server certificate, store (migrated). Returns the context and the server certificate/key
    paths. The admin user is created only once both listeners are up (see serve): a first start
    that fails (port in use...) must not create it and lose its password."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(cfg.data_dir, 0o700)
    install_shared_ca(cfg.data_dir, os.environ)
    ca = ensure_ca(cfg.data_dir)
    cert, key = ca.issue_server_cert(cfg.data_dir, cfg.server_names())
    lock = single_console_lock(cfg.db_url, cfg.data_dir)  # SQLite: one console per database file
    store = Store.open(cfg.db_url, cfg.data_dir)
    if store.dialect == "sqlite":
        store.defenders.mark_all_disconnected()
    ctx = ConsoleContext.build(cfg.data_dir, store, ca)
    ctx.single_lock = lock
    ctx.blobstore = cfg.blobstore
    ctx.public = frozenset(
        name for name, on in (("metrics", cfg.public_metrics), ("docs", cfg.public_api_docs)) if on
    )
    return ctx, cert, key


async def serve(cfg: ConsoleConfig) -> None:
    tune_malloc()  # before the store's worker threads start (see garrison.console.memory)
    before, after = raise_nofile_limit()
    if after != before:
        log.info("raised the open-files limit from %d to %d", before, after)
    ctx, cert, key = await asyncio.to_thread(prepare, cfg)
    tune_gc()
    if cfg.blobstore is not None:
        cfg.blobstore.mkdir(parents=True, exist_ok=True)
        ctx.scans.start_blobstore(cfg.blobstore, cfg.blobstore_poll_s)
    await ctx.alerts.configure(await asyncio.to_thread(load_alert_settings, ctx))
    ctx.metrics.policy_revision.set((await asyncio.to_thread(ctx.policies.runtime)).revision)

    ingested = [0]

    def on_events(events: list[AuditEvent]) -> None:
        ingested[0] += len(events)
        ctx.metrics.events_ingested.inc(len(events))
        ctx.alerts.submit(events)
        ctx.live.notify()
        cluster.audits_stored()

    cluster = ctx.cluster = ClusterService(ctx.store)
    cluster.on_audits = ctx.live.notify
    backend = ConsoleChannelBackend(
        ctx.store, ctx.defenders, ctx.policies, on_events, ctx.scans, replica_id=cluster.replica_id
    )
    channel_tls = server_ssl_context(cert, key, client_ca_pem=ctx.ca.cert_pem, client_cert="optional")
    channel = ChannelServer(
        backend,
        channel_tls,
        cfg.host or "0.0.0.0",
        cfg.defender_port,
        admission=fd_admission(),
        policy_poll_interval=None,  # changes from other replicas arrive through the cluster listener
        profile_limits=limits_from_env(os.environ.get("GARRISON_PROFILE_LIMITS")),
    )
    await channel.start()
    ctx.channel = channel
    _follow_changes(ctx, cluster, channel)
    ctx.metrics.watch_cluster(cluster)
    ctx.metrics.watch_throttle(ctx.store.throttle.count)
    ctx.metrics.defenders_connected.set_function(channel.connected_count)
    ctx.metrics.resident_bytes.set_function(rss_bytes)
    trimmer = asyncio.create_task(trim_while_busy(lambda: (ingested[0], channel.connected_count())))
    auto_accepter = asyncio.create_task(_auto_accept_loop(ctx, channel, _learning_tick()))
    https_stats = https_limits_from_env(os.environ.get("GARRISON_HTTPS_LIMITS"))
    ctx.metrics.watch_connections(channel.refused, https_stats)
    ctx.metrics.watch_profiles(channel.profile_refused)

    sock = _bind(cfg.host, cfg.port)
    port = sock.getsockname()[1]
    shown = url_host(cfg.advertised_host())
    ctx.console_url = f"https://{shown}:{port}"
    ctx.ws_address = f"wss://{shown}:{channel.port}"

    server = _Server(
        uvicorn.Config(
            asgi(ctx),
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            log_level="warning",
            lifespan="off",
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=5,
            http=guarded_protocol(https_stats),
        )
    )
    loop = asyncio.get_running_loop()
    undo_handshake_timeout = with_handshake_timeout(loop, https_stats.handshake_timeout)

    def stop() -> None:
        server.should_exit = True
        ctx.live.close()  # end the UI's live streams, or a graceful shutdown would wait for them

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    undo_handshake_timeout()
    state_path = cfg.data_dir / STATE_FILE
    try:
        if task.done():
            await task
            raise RuntimeError("the HTTPS server did not start")
        await cluster.start(url=ctx.console_url, ws_address=ctx.ws_address, held=channel.connected_ids)
        password = await asyncio.to_thread(ctx.auth.ensure_admin)
        _announce(ctx, password)  # before the state file: whoever waits for it finds the password printed
        _write_state(
            state_path,
            {
                "url": ctx.console_url,
                "api_url": ctx.console_url + "/api/v1",
                "ws_address": ctx.ws_address,
                "port": port,
                "defender_port": channel.port,
                "ca_pem_path": str(cfg.data_dir / "ca.pem"),
                "database": ctx.store.dialect,
                "pid": os.getpid(),
            },
        )
        await task
    finally:
        with contextlib.suppress(FileNotFoundError):
            state_path.unlink()
        trimmer.cancel()
        auto_accepter.cancel()
        await channel.stop()
        await backend.aclose()
        await cluster.stop()
        await ctx.alerts.close()
        await asyncio.to_thread(ctx.scans.stop)
        ctx.store.engine.dispose()


def _follow_changes(ctx: ConsoleContext, cluster: ClusterService, channel: ChannelServer) -> None:
    """What this replica does when another one (or a local tool) changed something it acts on."""

    async def policy() -> None:
        current = await asyncio.to_thread(ctx.policies.runtime)
        ctx.metrics.policy_revision.set(current.revision)
        if channel.pushed_revision != current.revision:
            await channel.notify_policy_changed()

    async def settings() -> None:
        await ctx.alerts.configure(await asyncio.to_thread(load_alert_settings, ctx))

    async def auth() -> None:
        ctx.auth.forget_cached()  # passwords verified before a change elsewhere are checked again

    async def defenders() -> None:
        held = set(channel.connected_ids())
        for defender_id in await asyncio.to_thread(ctx.store.cluster.revoked_held_by, cluster.replica_id):
            if defender_id in held:
                await channel.disconnect_defender(defender_id, "removed by an operator")

    async def send(defender_id: str, name: str, args: dict[str, Any]) -> CommandResult:
        return await channel.send_command(defender_id, name, args, timeout=COMMAND_TIMEOUT_S)

    async def commands() -> None:
        await cluster.run_claimed_commands(send)

    for topic, handler in (
        ("policy", policy),
        ("settings", settings),
        ("auth", auth),
        ("defenders", defenders),
        ("commands", commands),
    ):
        cluster.on(topic, handler)


def _announce(ctx: ConsoleContext, password: str | None) -> None:
    out = sys.stdout
    print(f"Garrison console: {ctx.console_url}  (API {ctx.console_url}/api/v1, docs /api/v1/docs)", file=out)
    print(f"Defender channel: {ctx.ws_address}", file=out)
    print(f"Database: {ctx.store.dialect}; data directory: {ctx.data_dir}", file=out)
    if password is not None:
        print("First start: created the admin user (the password is shown only this once):", file=out)
        print("  username: admin", file=out)
        print(f"  password: {password}", file=out)
    out.flush()


def run(cfg: ConsoleConfig) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        asyncio.run(serve(cfg))
    else:
        uvloop.run(serve(cfg))


def _learning_tick() -> float:
    """Seconds between auto-accept checks (GARRISON_LEARNING_TICK_S; windows are hours, a minute is fine)."""
    try:
        return max(0.2, float(os.environ.get("GARRISON_LEARNING_TICK_S") or 60))
    except ValueError:
        return 60.0


async def _auto_accept_loop(ctx: ConsoleContext, channel: ChannelServer, every: float) -> None:
    """Profiles whose auto-accept condition holds get their proposal accepted (alert mode) and pushed."""
    while True:
        await asyncio.sleep(every)
        try:
            saved = await asyncio.to_thread(ctx.learning.auto_accept_due)
        except Exception:
            log.exception("auto-accept check failed")
            continue
        if saved:
            ctx.metrics.policy_revision.set(saved[-1].revision)
            await channel.notify_policy_changed()
