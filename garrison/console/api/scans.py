"""Scan reports from the droplet scanner and the latest verdict per droplet digest."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from garrison.console.api.deps import Ctx, Reader, Writer

router = APIRouter(prefix="/scans", tags=["scans"])


class ScanReportIn(BaseModel):
    """`digest` and `verdict` are required; everything else is kept as the report's JSON."""

    model_config = ConfigDict(extra="allow")
    digest: str = Field(min_length=1, max_length=256)
    verdict: str = Field(min_length=1, max_length=32)
    app_name: str = Field(default="", max_length=256)
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
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[dict[str, Any]]:
    return c.store.scans.list(app=app, digest=digest, limit=limit, offset=offset)


@router.get("/verdict")
def scan_verdict(
    c: Ctx, _p: Reader, digest: Annotated[str, Query(min_length=1, max_length=256)]
) -> dict[str, Any]:
    """Latest verdict for a droplet digest: pass | fail | unknown (never scanned), with the assurance
    policy's runtime `effect` telling the defender whether a failed verdict blocks the start."""
    return c.scans.verdict(digest)


@router.get("/{scan_id}")
def get_scan(scan_id: Annotated[int, Path(ge=1, le=2**31 - 1)], c: Ctx, _p: Reader) -> dict[str, Any]:
    row = c.store.scans.get(scan_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no scan {scan_id}")
    return row
