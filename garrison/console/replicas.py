"""What running several console replicas needs before the store opens.

- **One console per SQLite file.** SQLite has one writer and each console keeps per-process state
  (connections it holds, caches): a second console on the same file is refused with a message that
  points to PostgreSQL, instead of two consoles silently marking each other's defenders disconnected.
- **A shared CA.** Defenders pin the console CA (install bundle) and present certificates it signed, so
  every replica must hold the same CA. On platforms whose data directory is per instance and ephemeral
  (Cloud Foundry), the CA comes from `GARRISON_CONSOLE_CA_CERT` / `GARRISON_CONSOLE_CA_KEY` (PEM text,
  e.g. from CredHub or a user-provided service) and is written into the data directory at start.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from sqlalchemy.engine import make_url

from garrison.console.store.db import normalise_url
from garrison.pki.ca import CA_CERT, CA_KEY

CA_CERT_ENV = "GARRISON_CONSOLE_CA_CERT"
CA_KEY_ENV = "GARRISON_CONSOLE_CA_KEY"


class ReplicaSetupError(RuntimeError):
    """The console cannot start as configured; the message says what to change."""


def single_console_lock(db_url: str | None, data_dir: Path) -> IO[str] | None:
    """SQLite: take `<database>.console-lock` for the life of the process (None for PostgreSQL or an
    in-memory database). Raises ReplicaSetupError when another console holds it."""
    url = make_url(normalise_url(db_url, data_dir))
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database).with_name(Path(url.database).name + ".console-lock")
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise ReplicaSetupError(
            f"another Garrison console (pid {holder}) already serves the SQLite database {url.database}. "
            "SQLite supports one console; to run several console replicas, give them all one "
            "PostgreSQL database (--db postgresql://...; see docs/console-deployment.md)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def install_shared_ca(data_dir: Path, env: Mapping[str, str]) -> bool:
    """Write the CA given in the environment into `data_dir` (0600 key). A data directory that
    already holds a different CA is refused: silently replacing it would orphan every defender
    enrolled with it. Returns True when the environment provided the CA."""
    cert, key = env.get(CA_CERT_ENV, "").strip(), env.get(CA_KEY_ENV, "").strip()
    if not cert and not key:
        return False
    if not cert or not key:
        raise ReplicaSetupError(f"set both {CA_CERT_ENV} and {CA_KEY_ENV} (PEM), or neither")
    if "BEGIN CERTIFICATE" not in cert or "PRIVATE KEY" not in key:
        raise ReplicaSetupError(f"{CA_CERT_ENV} / {CA_KEY_ENV} must hold PEM text (a certificate, a key)")
    cert_path, key_path = data_dir / CA_CERT, data_dir / CA_KEY
    if cert_path.exists():
        if cert_path.read_text().strip() != cert:
            raise ReplicaSetupError(
                f"{cert_path} holds another CA than {CA_CERT_ENV}: defenders enrolled with it would be "
                "refused. Remove the data directory's ca.pem/ca-key.pem to use the shared CA"
            )
        return True
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    cert_path.write_text(cert + "\n")
    return True
