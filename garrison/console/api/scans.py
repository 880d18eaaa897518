"""Scan reports from the droplet scanner and the latest verdict per droplet digest."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from garrison.console.api.deps import Ctx, Reader, Writer
from garrison.scan.model import AppRef

router = APIRouter(prefix="/scans", tags=["scans"])


class ScanReportIn(BaseModel):
    """`digest` and `verdict` are required; everything else is kept as the report's JSON. `digest` is
    the droplet's content digest for buildpack and blobstore reports; `app` names the CF app."""

    model_config = ConfigDict(extra="allow")
    digest: str = Field(min_length=1, max_length=256)
    verdict: Literal["pass", "fail"]
    app_name: str = Field(default="", max_length=256)
    app: AppRef | None = None
    source: Literal["", "cli", "staging"] = Field(
        default="", description="'blobstore' is reserved for the console's own rescans"
    )
    blob: str = Field(default="", max_length=1024)
    db_revision: str = Field(default="", max_length=64)
    summary: dict[str, Any] = Field(default_factory=dict)


class ScanCreated(BaseModel):
    id: int


@router.post("", response_model=ScanCreated, status_code=201)
def post_scan(report: ScanReportIn, c: Ctx, _p: Writer) -> Any:
    return {"id": c.scans.add(report.model_dump(mode="json"))}


@router.get("")
def list_scans(
    c: Ctx,
    _p: Reader,
    app: Annotated[str | None, Query(max_length=256)] = None,
    digest: Annotated[str | None, Query(max_length=256)] = None,
    app_guid: Annotated[str | None, Query(max_length=64)] = None,
    verdict: Annotated[Literal["pass", "fail"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[dict[str, Any]]:
    """Every report, newest first (the verdict history), filtered by app name, app guid, droplet or verdict."""
    return c.store.scans.list(
        app=app, digest=digest, app_guid=app_guid, verdict=verdict, limit=limit, offset=offset
    )


@router.get("/latest")
def latest_scans(
    c: Ctx,
    _p: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[dict[str, Any]]:
    """The newest report of each (app, droplet) pair."""
    return c.store.scans.latest_per_droplet(limit=limit, offset=offset)


@router.get("/verdict")
def scan_verdict(
    c: Ctx,
    _p: Reader,
    digest: Annotated[str, Query(min_length=1, max_length=256)],
    app_guid: Annotated[str, Query(max_length=64)] = "",
) -> dict[str, Any]:
    """The verdict for a droplet (content digest) staged for an app (guid): pass | fail | unknown
    (never scanned), with the assurance policy's runtime `effect` telling the defender whether a failed
    verdict blocks the start. Reports made for another app never answer; without `app_guid` any
    report about the droplet does."""
    return c.scans.verdict(digest, app_guid)


@router.get("/{scan_id}")
def get_scan(scan_id: Annotated[int, Path(ge=1, le=2**31 - 1)], c: Ctx, _p: Reader) -> dict[str, Any]:
    row = c.store.scans.get(scan_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no scan {scan_id}")
    return row
