"""GET/PUT the runtime policy (pushed to defenders on change) and the scanner's assurance policy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, HTTPException
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from garrison.console.api.deps import Ctx, Reader, Writer
from garrison.console.services.policies import assurance_model
from garrison.policy.model import RuntimePolicy

router = APIRouter(prefix="/policies", tags=["policies"])


@router.get("/runtime/app-embedded", response_model=RuntimePolicy)
def get_runtime(c: Ctx, _p: Reader) -> Any:
    return c.policies.runtime()


@router.put("/runtime/app-embedded", response_model=RuntimePolicy)
async def put_runtime(policy: RuntimePolicy, c: Ctx, p: Writer) -> Any:
    """Replace the ordered rule list; `revision` in the body is ignored (the console bumps it)."""
    saved = await run_in_threadpool(c.policies.put_runtime, policy, p.username)
    c.metrics.policy_revision.set(saved.revision)
    if c.channel is not None:
        await c.channel.notify_policy_changed()
    return saved


@router.get("/runtime/app-embedded/history")
def runtime_history(c: Ctx, _p: Reader) -> list[dict[str, Any]]:
    return c.policies.runtime_history()


@router.get("/assurance")
def get_assurance(c: Ctx, _p: Reader) -> dict[str, Any]:
    return c.policies.assurance_document()


@router.put("/assurance")
def put_assurance(c: Ctx, p: Writer, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """Validated by the scanner's AssurancePolicy model (422 names the field; nothing stored)."""
    model = assurance_model()
    if model is None:
        raise HTTPException(status_code=409, detail="the scanner component is not installed in this console")
    body = {k: v for k, v in body.items() if k != "revision"}  # what GET returned may be sent back
    try:
        validated = model.model_validate(body).model_dump(mode="json")
    except ValidationError as exc:
        raise HTTPException(
            status_code=422, detail=exc.errors(include_url=False, include_context=False)
        ) from None
    return c.policies.put_assurance(validated, p.username)
