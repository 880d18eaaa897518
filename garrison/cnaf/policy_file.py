"""Load CNAF controls for standalone use from a file: bare controls, a rule, or a whole runtime policy."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from garrison.policy.cnaf import CnafControls
from garrison.policy.model import Rule, RuntimePolicy


class PolicyFileError(ValueError):
    pass


def load_controls(path: Path, rule_name: str | None = None) -> CnafControls:
    """Accepts JSON or YAML holding CnafControls, a Rule with `cnaf`, or a RuntimePolicy.

    From a RuntimePolicy the named rule is used, else the first enabled rule that has CNAF controls.
    Errors name the file and the offending field.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyFileError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise PolicyFileError(f"{path}: not valid JSON/YAML: {exc}") from exc
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
        errs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()[:10]
        )
        raise PolicyFileError(f"{path}: invalid policy: {errs}") from exc
