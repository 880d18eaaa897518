"""Service-level errors the API maps to HTTP statuses (so services know nothing of HTTP)."""

from __future__ import annotations


class NotFound(LookupError):
    pass


class Conflict(ValueError):
    pass


class Invalid(ValueError):
    """Bad input found after schema validation; `loc` names the field like FastAPI's 422s do."""

    def __init__(self, message: str, loc: tuple[str | int, ...] = ("body",)) -> None:
        super().__init__(message)
        self.loc = loc


def invalid_detail(loc: tuple[str | int, ...], message: str) -> list[dict[str, object]]:
    """A 422 body shaped like FastAPI's own (the OpenAPI document promises a list)."""
    return [{"loc": list(loc), "msg": message, "type": "value_error"}]
