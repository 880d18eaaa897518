"""The last policy the console sent, cached in the data folder so the defender can start the app
with it while the console is unreachable."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from garrison.policy.model import RuntimePolicy

CACHE_FILE = "policy-cache.json"


class PolicyCacheError(ValueError):
    """The cached policy exists but cannot be used (corrupt, or written by an incompatible version)."""


def save_cached_policy(data_folder: Path, policy: RuntimePolicy) -> Path:
    """Write atomically (temp file + rename, 0600) so a crash never leaves half a policy."""
    data_folder.mkdir(parents=True, exist_ok=True)
    path = data_folder / CACHE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(policy.model_dump_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_cached_policy(data_folder: Path) -> RuntimePolicy | None:
    """The cached policy, None if there is none; PolicyCacheError if it is unusable."""
    path = data_folder / CACHE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PolicyCacheError(f"cannot read cached policy {path}: {exc.strerror}") from exc
    try:
        return RuntimePolicy.model_validate(json.loads(text))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PolicyCacheError(f"cached policy {path} is corrupt (not JSON); delete it") from None
    except ValidationError as exc:
        raise PolicyCacheError(
            f"cached policy {path} is invalid ({exc.error_count()} errors); delete it"
        ) from None
