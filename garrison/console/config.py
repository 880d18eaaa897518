"""Console start-up options (the `garrison console` flags)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_data_dir() -> Path:
    env = os.environ.get("GARRISON_DATA_DIR")
    return Path(env) if env else Path.home() / ".garrison" / "console"


@dataclass
class ConsoleConfig:
    data_dir: Path
    db_url: str | None = None
    host: str = "0.0.0.0"
    port: int = 8083
    defender_port: int = 8084
    public_address: str | None = None
    blobstore: Path | None = None
    blobstore_poll_s: float = 60.0

    def advertised_host(self) -> str:
        """The name clients should use: --public-address, else the bind address (wildcards → localhost)."""
        if self.public_address:
            return self.public_address
        if self.host in ("0.0.0.0", "", "::"):
            return "localhost"
        return self.host

    def server_names(self) -> list[str]:
        names = [self.advertised_host(), "localhost", "127.0.0.1", "::1"]
        if self.host not in ("0.0.0.0", "", "::"):
            names.append(self.host)
        return list(dict.fromkeys(names))


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
