"""Read a policy document (JSON or YAML) from a file, with errors that name the file and the field.

Every command that takes a policy file (scanner assurance policy, cell posture policy, CNAF controls)
reads it here so that they accept the same formats and fail the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class PolicyFileError(ValueError):
    """A policy file that cannot be read, parsed or validated; the message names the file."""


def read_document(path: Path) -> Any:
    """The parsed document: JSON when the name ends in .json, YAML otherwise (YAML 1.1 reads JSON too)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise PolicyFileError(f"{path}: cannot read: {reason}") from exc
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise PolicyFileError(f"{path}: not valid JSON/YAML: {exc}") from exc


def validation_message(path: Path, exc: ValidationError) -> str:
    """The first ten validation errors as `field.path: message`, prefixed with the file."""
    errs = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()[:10]
    )
    return f"{path}: invalid policy: {errs}"


def load_model(path: Path, model: type[ModelT]) -> ModelT:
    """The file validated as `model`; an empty file is the model's defaults."""
    doc = read_document(path)
    try:
        return model.model_validate(doc or {})
    except ValidationError as exc:
        raise PolicyFileError(validation_message(path, exc)) from exc
