"""Load CNAF controls for standalone use from a file: bare controls, a rule, or a whole runtime policy."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from garrison.policy.cnaf import CnafControls
from garrison.policy.files import PolicyFileError, read_document, validation_message
from garrison.policy.model import Rule, RuntimePolicy

__all__ = ["PolicyFileError", "load_controls"]


def load_controls(path: Path, rule_name: str | None = None) -> CnafControls:
    """Accepts JSON or YAML holding CnafControls, a Rule with `cnaf`, or a RuntimePolicy.

    From a RuntimePolicy the named rule is used, else the first enabled rule that has CNAF controls.
    Errors name the file and the offending field.
    """
    doc = read_document(path)
    if not isinstance(doc, dict):
        raise PolicyFileError(f"{path}: expected a mapping at the top level")
    try:
        if "rules" in doc:
            policy = RuntimePolicy.model_validate(doc)
            for rule in policy.rules:
                if rule.cnaf is not None and not rule.disabled and rule_name in (None, rule.name):
                    return rule.cnaf
            raise PolicyFileError(
                f"{path}: no enabled rule{f' named {rule_name!r}' if rule_name else ''} with CNAF controls"
            )
        if "name" in doc:
            rule = Rule.model_validate(doc)
            if rule.cnaf is None:
                raise PolicyFileError(f"{path}: rule {rule.name!r} has no 'cnaf' controls")
            return rule.cnaf
        return CnafControls.model_validate(doc)
    except ValidationError as exc:
        raise PolicyFileError(validation_message(path, exc)) from exc
