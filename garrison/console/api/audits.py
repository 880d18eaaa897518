"""Runtime audits (filters, paging, CSV download) and incidents."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from garrison.console.api.deps import Ctx, Reader, principal
from garrison.console.services.live import audit_stream
from garrison.console.store.events import EventFilter
from garrison.policy.audit import AuditEffect, AuditType

router = APIRouter(tags=["audits"])
_TIME_DOC = "UNIX seconds or ISO 8601 (e.g. 2026-01-31T12:00:00Z)"


def _parse_time(name: str, value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        t = float(value)
    except ValueError:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise HTTPException(status_code=422, detail=f"'{name}' is not a time: use {_TIME_DOC}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        t = parsed.timestamp()
    if not math.isfinite(t) or not -1e11 < t < 1e11:
        raise HTTPException(status_code=422, detail=f"'{name}' is out of range")
    return t


def event_filter(
    from_: Annotated[str | None, Query(alias="from", max_length=64, description=_TIME_DOC)] = None,
    to: Annotated[str | None, Query(max_length=64, description=_TIME_DOC)] = None,
    app: Annotated[str | None, Query(max_length=256)] = None,
    defender: Annotated[str | None, Query(max_length=256)] = None,
    type: Annotated[AuditType | None, Query()] = None,
    effect: Annotated[AuditEffect | None, Query()] = None,
    rule: Annotated[str | None, Query(max_length=256)] = None,
) -> EventFilter:
    return EventFilter(
        since=_parse_time("from", from_),
        until=_parse_time("to", to),
        app=app,
        defender=defender,
        type=type,
        effect=effect,
        rule=rule,
    )


Filter = Annotated[EventFilter, Depends(event_filter)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10**9)]


@router.get("/audits/runtime/app-embedded")
def runtime_audits(
    c: Ctx, _p: Reader, flt: Filter, response: Response, limit: Limit = 100, offset: Offset = 0
) -> list[dict[str, Any]]:
    """Newest first; the total number of matches is in the `Total-Count` header. `Stream-Cursor` is
    where the live stream (`…/stream?after=`) continues from so that nothing stored meanwhile is missed."""
    cursor = c.store.events.max_seq()  # taken first: an audit stored during the query is streamed, not lost
    rows, total = c.audits.query(flt, limit, offset)
    response.headers["Total-Count"] = str(total)
    response.headers["Stream-Cursor"] = str(cursor)
    return rows


@router.get(
    "/audits/runtime/app-embedded/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def runtime_audits_csv(c: Ctx, _p: Reader, flt: Filter) -> StreamingResponse:
    return StreamingResponse(
        c.audits.csv_lines(flt),
        media_type="text/csv",
        headers={"content-disposition": 'attachment; filename="runtime-audits.csv"'},
    )


@router.get(
    "/audits/runtime/app-embedded/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def runtime_audits_stream(
    c: Ctx,
    _p: Reader,
    flt: Filter,
    request: Request,
    after: Annotated[
        int | None, Query(ge=0, le=2**62, description="resume after this cursor (an `id:`)")
    ] = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    """Server-Sent Events: each new audit matching the filters as it is stored (`event: audit`), the
    defenders' connected/disconnected counts when they change (`event: defenders`), `event: skipped`
    when audits arrive faster than a stream carries them. The credentials are re-checked every 30 s."""
    if after is None and last_event_id and last_event_id.isdigit():
        after = int(last_event_id)

    def still_allowed() -> bool:
        try:
            principal(request, c)
        except HTTPException:
            return False
        return True

    return StreamingResponse(
        audit_stream(c.store, c.live, flt, after, still_allowed),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/incidents")
def incidents(
    c: Ctx, _p: Reader, flt: Filter, limit: Limit = 100, offset: Offset = 0
) -> list[dict[str, Any]]:
    """Alert/prevent audits of one app and type, each within 10 minutes of the previous one."""
    return c.audits.incidents(flt, limit, offset)
