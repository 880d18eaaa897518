"""The last policy the console sent, cached in the data folder so the defender can start the app
with it while the console is unreachable.

The cache is bound to the console that sent it: the file holds the SHA-256 of that console's CA
certificate next to the policy, and a defender whose install bundle names another console's CA never
starts on it (the data folder may have been moved to another console, or the console re-installed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from garrison.policy.model import RuntimePolicy

CACHE_FILE = "policy-cache.json"
BINDING_KEY = "console_ca_sha256"


class PolicyCacheError(ValueError):
    """The cached policy exists but cannot be used (corrupt, or written by an incompatible version)."""


class ForeignPolicyCache(Exception):
    """The cached policy was not issued by the console of the current install bundle: never used."""


def save_cached_policy(data_folder: Path, policy: RuntimePolicy, *, console_ca: str = "") -> Path:
    """Write atomically (temp file + rename, 0600) so a crash never leaves half a policy.
    `console_ca` is the issuing console's CA fingerprint (credentials.ca_fingerprint)."""
    data_folder.mkdir(parents=True, exist_ok=True)
    path = data_folder / CACHE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'{{"{BINDING_KEY}":{json.dumps(console_ca)},"policy":{policy.model_dump_json()}}}')
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_cached_policy(
    data_folder: Path, *, console_ca: str | None = None, accept_unbound: bool = True
) -> RuntimePolicy | None:
    """The cached policy, None if there is none; PolicyCacheError if it is unusable.

    With `console_ca`, a cache bound to another console raises ForeignPolicyCache, and so does an
    unbound one (written before caches were bound) unless `accept_unbound` (the caller proved the
    data folder belongs to this console, e.g. its cached certificate was issued by this CA)."""
    path = data_folder / CACHE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PolicyCacheError(f"cannot read cached policy {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PolicyCacheError(f"cached policy {path} is corrupt (not JSON); delete it") from None
    bound = isinstance(data, dict) and BINDING_KEY in data
    if console_ca is not None:
        if bound and data[BINDING_KEY] != console_ca:
            raise ForeignPolicyCache(
                f"cached policy {path} was issued by another console (CA sha256 "
                f"{str(data[BINDING_KEY])[:16]}…, this bundle's console: {console_ca[:16]}…): not used"
            )
        if not bound and not accept_unbound:
            raise ForeignPolicyCache(
                f"cached policy {path} is not bound to a console (written by an older defender) and this "
                "defender's identity is not from the current console: not used"
            )
    try:
        return RuntimePolicy.model_validate(data["policy"] if bound else data)
    except (ValidationError, TypeError) as exc:
        count = exc.error_count() if isinstance(exc, ValidationError) else 1
        raise PolicyCacheError(f"cached policy {path} is invalid ({count} errors); delete it") from None
