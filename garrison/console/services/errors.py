"""Service-level errors the API maps to HTTP statuses (so services know nothing of HTTP)."""

from __future__ import annotations


class NotFound(LookupError):
    pass


class Conflict(ValueError):
    pass


class Invalid(ValueError):
    pass
