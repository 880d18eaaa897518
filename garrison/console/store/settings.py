"""Small JSON settings documents keyed by name (alert outputs, ...)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, insert, select

from garrison.console.store.cluster import bump
from garrison.console.store.tables import settings


class SettingsStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(settings.c.value).where(settings.c.key == key)).first()
        return dict(row.value) if row else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self.engine.begin() as c:
            c.execute(delete(settings).where(settings.c.key == key))
            c.execute(insert(settings).values(key=key, value=value))
            bump(c, "settings")
