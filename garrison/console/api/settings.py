"""Admin settings: alert outputs (webhook, syslog)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from garrison.console.api.deps import Admin, Ctx
from garrison.console.services.alert_settings import AlertSettings

router = APIRouter(prefix="/settings", tags=["settings"])
ALERTS_KEY = "alerts"


def load_alert_settings(c: Any) -> AlertSettings:
    raw = c.store.settings.get(ALERTS_KEY)
    return AlertSettings.model_validate(raw) if raw else AlertSettings()


@router.get("/alerts", response_model=AlertSettings)
def get_alerts(c: Ctx, _p: Admin) -> Any:
    return load_alert_settings(c).masked()


@router.put("/alerts", response_model=AlertSettings)
async def put_alerts(body: AlertSettings, c: Ctx, p: Admin) -> Any:
    old = await run_in_threadpool(load_alert_settings, c)
    new = body.keep_secret_from(old)
    await run_in_threadpool(c.store.settings.put, ALERTS_KEY, new.model_dump(mode="json"))
    await run_in_threadpool(
        c.store.mgmt.record, p.username, "settings.alerts.update", "", new.masked().model_dump(mode="json")
    )
    await c.alerts.configure(new)
    return new.masked()
