"""Engine creation: URL normalisation, SQLite WAL, PostgreSQL through psycopg 3."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class DatabaseUrlError(ValueError):
    """--db is not a URL this console can use; the message says what is accepted."""


def normalise_url(url: str | None, data_dir: Path) -> str:
    """`None` → SQLite in the data dir; `postgres[ql]://` → the psycopg 3 driver."""
    if not url:
        return f"sqlite:///{(data_dir / 'garrison.db').resolve()}"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(
            f"--db {url!r} is not a database URL: use postgresql://user:pass@host/db or sqlite:///path"
        ) from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite":
        return parsed.render_as_string(hide_password=False)
    raise DatabaseUrlError(f"--db: unsupported database {backend!r}; use postgresql:// or sqlite://")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets API readers run while the channel writes event batches; NORMAL sync is durable in WAL.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def db_now(conn: Connection) -> Any:
    """The database's clock as UNIX seconds (a SQL expression on PostgreSQL): replicas' clocks may
    disagree, the database's is the one shared state (leases, login throttling) is compared with."""
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", func.clock_timestamp())
    return time.time()


def insert_ignore(engine: Engine, table: Any) -> Any:
    """`INSERT ... ON CONFLICT` of the engine's dialect (both spell `on_conflict_do_nothing` alike)."""
    return (pg_insert if engine.dialect.name == "postgresql" else sqlite_insert)(table)
