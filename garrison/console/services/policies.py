"""Runtime and assurance policies: validate, store a new revision, tell the channel to push it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from garrison.console.store.open import Store
from garrison.policy.model import RuntimePolicy

RUNTIME_KIND = "runtime/app-embedded"
ASSURANCE_KIND = "assurance"


def assurance_model() -> type[BaseModel] | None:
    """The scanner's AssurancePolicy model, imported lazily (the scanner package is optional here)."""
    try:
        from garrison.scan.assurance import AssurancePolicy
    except ImportError:
        return None
    return AssurancePolicy


class PolicyService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def runtime(self) -> RuntimePolicy:
        cur = self.store.policies.current(RUNTIME_KIND)
        if cur is None:
            return RuntimePolicy(rules=[], revision=0)
        revision, body = cur
        return RuntimePolicy.model_validate({**body, "revision": revision})

    def put_runtime(self, policy: RuntimePolicy, author: str) -> RuntimePolicy:
        body = policy.model_dump(mode="json")
        revision = self.store.policies.save(RUNTIME_KIND, body, author)
        self.store.mgmt.record(author, "policy.runtime.update", RUNTIME_KIND, {"revision": revision})
        return policy.model_copy(update={"revision": revision})

    def runtime_history(self) -> list[dict[str, Any]]:
        return self.store.policies.history(RUNTIME_KIND)

    def assurance(self) -> dict[str, Any]:
        cur = self.store.policies.current(ASSURANCE_KIND)
        if cur is not None:
            return cur[1]  # stored as validated by AssurancePolicy, so it reads back through it unchanged
        model = assurance_model()
        return model().model_dump(mode="json") if model is not None else {}

    def assurance_document(self) -> dict[str, Any]:
        """The policy as the API serves it: plus `revision` (0 = the default, never saved)."""
        cur = self.store.policies.current(ASSURANCE_KIND)
        return {**self.assurance(), "revision": cur[0] if cur is not None else 0}

    def put_assurance(self, body: dict[str, Any], author: str) -> dict[str, Any]:
        revision = self.store.policies.save(ASSURANCE_KIND, body, author)
        self.store.mgmt.record(author, "policy.assurance.update", ASSURANCE_KIND, {"revision": revision})
        return self.assurance_document()
