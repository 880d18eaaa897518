"""Defenders: list, summary, revoke; the install bundle and the defender download."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from garrison.channel.bundle import encode_bundle
from garrison.channel.protocol import DefenderType
from garrison.console.api.deps import Admin, Ctx, Reader, Writer
from garrison.console.services.defender_image import IMAGE_NAME, build_image
from garrison.console.services.errors import invalid_detail

router = APIRouter(tags=["defenders"])


ConsoleAddr = Annotated[
    str | None, Query(max_length=255, description="host[:port] defenders use to reach the channel")
]


class BundleOut(BaseModel):
    bundle: str


@router.get("/defenders")
def list_defenders(
    c: Ctx,
    _p: Reader,
    app: Annotated[str | None, Query(max_length=256)] = None,
    connected: bool | None = None,
    include_revoked: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[dict[str, Any]]:
    out = c.defenders.list(
        app=app, connected=connected, include_revoked=include_revoked, limit=limit, offset=offset
    )
    if any(d.get("defender_type") == "cell" for d in out):
        counts = c.store.workloads.running_counts()
        for d in out:
            if d.get("defender_type") == "cell":
                d["workloads"] = counts.get(d["id"], 0)
    return out


@router.get("/defenders/summary")
def defenders_summary(c: Ctx, _p: Reader) -> dict[str, int]:
    return c.store.defenders.summary()


@router.get("/defenders/install-bundle", response_model=BundleOut)
def install_bundle(
    c: Ctx,
    p: Writer,
    consoleaddr: ConsoleAddr = None,
    org: Annotated[str | None, Query(max_length=256, description="only apps of this CF org")] = None,
    space: Annotated[str | None, Query(max_length=256, description="only apps of this CF space")] = None,
    app: Annotated[str | None, Query(max_length=256, description="only this CF app name")] = None,
    app_guid: Annotated[
        str | None, Query(max_length=256, description="only the CF app with this guid")
    ] = None,
) -> Any:
    """A bundle with a fresh enrolment token (each call mints one; operators and admins only).

    `org`, `space`, `app`, `app_guid` scope the bundle: a defender may enrol with it only when the
    app identity it reports (VCAP_APPLICATION) matches every given value. Cell defenders need
    `/defenders/install-bundle/cell` instead."""
    ws = _ws_for(consoleaddr, c.ws_address) if consoleaddr else c.ws_address
    scope = {k: v for k, v in (("org", org), ("space", space), ("app", app), ("app_guid", app_guid)) if v}
    return {"bundle": make_bundle(c, p.username, ws, scope, "app-embedded", replicas=not consoleaddr)}


@router.get("/defenders/install-bundle/cell", response_model=BundleOut)
def cell_install_bundle(
    c: Ctx,
    p: Writer,
    consoleaddr: ConsoleAddr = None,
) -> Any:
    """A bundle that enrols cell defenders only (the BOSH add-on carries one): a cell defender reports
    for every app container on its cell, so it has no app scope, and an app bundle cannot enrol one."""
    ws = _ws_for(consoleaddr, c.ws_address) if consoleaddr else c.ws_address
    return {"bundle": make_bundle(c, p.username, ws, {}, "cell", replicas=not consoleaddr)}


def make_bundle(
    c: Any, username: str, ws: str, scope: dict[str, str], defender_type: DefenderType, *, replicas: bool = False
) -> str:
    """A fresh enrolment token wrapped in an install bundle (recorded in the management audit).

    Fail-over addresses: GARRISON_CONSOLE_WS_ADDRESSES (comma-separated wss:// addresses, the
    operator's list) and, with `replicas` (no `consoleaddr` given), every live replica's own."""
    token = c.defenders.new_enrolment_token(username, scope, defender_type=defender_type)
    detail: dict[str, Any] = {"scope": scope} if scope else {}
    if defender_type != "app-embedded":
        detail["type"] = defender_type
    c.store.mgmt.record(username, "defender.install_bundle", ws, detail or None)
    return encode_bundle(
        ca_pem=c.ca.cert_pem,
        ws_address=ws,
        enrolment_token=token,
        console_url=c.console_url,
        ws_fallbacks=fallback_addresses(c, replicas=replicas),
    )


def fallback_addresses(c: Any, *, replicas: bool) -> tuple[str, ...]:
    listed = list(c.ws_fallbacks)
    if replicas and c.cluster is not None and c.cluster.shared:
        listed += [r["ws_address"] for r in c.store.cluster.replicas() if r["ws_address"]]
    return tuple(listed)


@router.get("/defenders/{defender_id}/workloads")
def defender_workloads(
    defender_id: str,
    c: Ctx,
    _p: Reader,
    running: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[dict[str, Any]]:
    """The app containers a cell defender protects (one workload each, with the rule that applies);
    stopped ones are kept a day with `gone_at`."""
    c.defenders.get(defender_id)  # 404 for an unknown defender
    return c.store.workloads.list(defender_id=defender_id, running=running, limit=limit, offset=offset)


@router.delete("/enrolment-tokens")
def revoke_enrolment_tokens(c: Ctx, p: Admin) -> dict[str, int]:
    """Invalidate every install bundle issued so far (enrolled defenders keep their certificates)."""
    n = c.store.defenders.revoke_enrolment_tokens()
    c.store.mgmt.record(p.username, "defender.enrolment_tokens.revoke", "", {"revoked": n})
    return {"revoked": n}


def _ws_for(consoleaddr: str, default_ws: str) -> str:
    """`consoleaddr` may be a host, host:port or a URL; the port defaults to the channel's."""
    text = consoleaddr.strip()
    try:  # urlsplit itself raises on a lone '[' (unbalanced IPv6 bracket)
        parts = urlsplit(text if "//" in text else "//" + text)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or any(ch in host for ch in " /?#@"):
        raise HTTPException(
            status_code=422,
            detail=invalid_detail(("query", "consoleaddr"), f"{consoleaddr!r} is not a host[:port]"),
        )
    port = port or urlsplit(default_ws).port or 8084
    shown = f"[{host}]" if ":" in host else host
    return f"wss://{shown}:{port}"


@router.delete("/defenders/{defender_id}", status_code=204)
async def delete_defender(defender_id: str, c: Ctx, p: Writer) -> None:
    """Revoke: the defender's certificate is refused from now on and its connection is closed."""
    await run_in_threadpool(c.defenders.revoke, defender_id, p.username)
    if c.channel is not None:
        await c.channel.disconnect_defender(defender_id, "removed by an operator")


@router.get("/defenders/{defender_id}/forensics")
async def defender_forensics(
    defender_id: str,
    c: Ctx,
    p: Writer,
    max_bytes: Annotated[int, Query(ge=1024, le=16 * 1024 * 1024)] = 4 * 1024 * 1024,
    container: Annotated[str | None, Query(max_length=256, description="a cell defender's container")] = None,
) -> Any:
    """Ask a connected defender for its forensic records (recent process and network activity); a cell
    defender's of one container (an audit's `extra.container`)."""
    return await _upload_forensics(defender_id, c, p, max_bytes, container)


@router.get("/defenders/{defender_id}/forensics/tree")
async def defender_process_tree(
    defender_id: str,
    c: Ctx,
    p: Writer,
    pid: Annotated[int | None, Query(ge=1, description="an incident's pid: only its branch")] = None,
    max_bytes: Annotated[int, Query(ge=1024, le=16 * 1024 * 1024)] = 4 * 1024 * 1024,
    container: Annotated[str | None, Query(max_length=256, description="a cell defender's container")] = None,
) -> dict[str, Any]:
    """The app's process tree rebuilt from the defender's forensic records (exec/fork records with
    ppid): who started what, the programs each process ran and the audits about it. With `pid`, the
    branch of that process (ancestors and descendants), e.g. for an incident's audit."""
    from garrison.defender.forensics import process_tree

    data = await _upload_forensics(defender_id, c, p, max_bytes, container)
    records = data.get("records", []) if isinstance(data, dict) else []
    return {"defender_id": defender_id, "pid": pid, "tree": process_tree(records, pid)}


async def _upload_forensics(defender_id: str, c: Any, p: Any, max_bytes: int, container: str | None = None) -> Any:
    from garrison.channel.server import DefenderNotConnected

    if c.channel is None:
        raise HTTPException(status_code=409, detail="the defender channel is not running")
    await run_in_threadpool(c.store.mgmt.record, p.username, "defender.forensics", defender_id)
    args: dict[str, Any] = {"max_bytes": max_bytes}
    if container:
        args["container"] = container
    try:
        try:
            result = await c.channel.send_command(defender_id, "upload_forensics", args, timeout=30)
        except DefenderNotConnected:
            if c.cluster is None:
                raise
            # held by another console replica: it runs the command and answers through the database
            result = await c.cluster.remote_command(defender_id, "upload_forensics", args, timeout=30)
    except DefenderNotConnected:
        raise HTTPException(status_code=404, detail=f"defender {defender_id!r} is not connected") from None
    except TimeoutError:
        raise HTTPException(
            status_code=504, detail=f"defender {defender_id!r} did not answer in 30 s"
        ) from None
    if not result.ok:
        raise HTTPException(status_code=409, detail=f"defender {defender_id!r} refused: {result.error}")
    return result.data


@router.get("/defenders/{defender_id}")
def get_defender(defender_id: str, c: Ctx, _p: Reader) -> dict[str, Any]:
    return c.defenders.get(defender_id)


@router.get(
    f"/images/{IMAGE_NAME}",
    response_class=Response,
    responses={200: {"content": {"application/gzip": {}}}},
)
def defender_image(c: Ctx, _p: Reader) -> Response:
    return Response(
        build_image(c.data_dir),
        media_type="application/gzip",
        headers={"content-disposition": f'attachment; filename="{IMAGE_NAME}"'},
    )
