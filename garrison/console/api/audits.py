"""Runtime audits (filters, paging, CSV download) and incidents."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator, Field

from garrison.console.api.deps import SSE_HEADERS, Ctx, Reader, still_allowed
from garrison.console.services.live import audit_stream
from garrison.console.store.events import EventFilter
from garrison.policy.audit import AuditEffect, AuditType

router = APIRouter(tags=["audits"])
_TIME_DOC = "UNIX seconds or ISO 8601 (e.g. 2026-01-31T12:00:00Z)"


def _not_a_number(value: object) -> object:
    """A number out of the seconds range must not be taken as a datetime (pydantic would)."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.match(value.strip())):
        raise ValueError("not an ISO 8601 time")
    return value


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(inf|infinity|nan)$", re.I)
Seconds = Annotated[float, Field(ge=-1e11, le=1e11, allow_inf_nan=False)]
IsoTime = Annotated[dt.datetime, BeforeValidator(_not_a_number)]
TimeParam = Seconds | IsoTime | None
"""UNIX seconds, or an ISO 8601 / RFC 3339 time (naive = UTC); anything else is a 422 naming it"""


def _seconds(value: float | dt.datetime | None) -> float | None:
    if value is None or isinstance(value, float | int):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def event_filter(
    from_: Annotated[TimeParam, Query(alias="from", description=_TIME_DOC)] = None,
    to: Annotated[TimeParam, Query(description=_TIME_DOC)] = None,
    app: Annotated[str | None, Query(max_length=256)] = None,
    defender: Annotated[str | None, Query(max_length=256)] = None,
    type: Annotated[AuditType | None, Query()] = None,
    effect: Annotated[AuditEffect | None, Query()] = None,
    rule: Annotated[str | None, Query(max_length=256)] = None,
) -> EventFilter:
    return EventFilter(
        since=_seconds(from_),
        until=_seconds(to),
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
    if after is None:
        # "from now" is fixed before the 200 goes out: the client may act as soon as it sees the
        # headers, and an audit stored before the stream's first read must still be streamed
        after = c.store.events.max_seq()
    return StreamingResponse(
        audit_stream(c.store, c.live, flt, after, still_allowed(request, c)),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


@router.get("/incidents")
def incidents(
    c: Ctx, _p: Reader, flt: Filter, limit: Limit = 100, offset: Offset = 0
) -> list[dict[str, Any]]:
    """Alert/prevent audits of one app and type, each within 10 minutes of the previous one."""
    return c.audits.incidents(flt, limit, offset)


@router.get("/incidents/{incident_id}")
def incident(
    incident_id: Annotated[str, Path(max_length=64, pattern=r"^[0-9a-f]+$")], c: Ctx, _p: Reader
) -> dict[str, Any]:
    """One incident (an `id` from the list) with its audits, newest first: each audit's defender and
    pid lead to the process tree (`GET /defenders/{id}/forensics/tree?pid=`)."""
    found = c.audits.incident(incident_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no incident {incident_id!r} (it may have aged out)")
    return found
