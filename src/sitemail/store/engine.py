"""Database engines: SQLite in the data dir by default, PostgreSQL by URL.

One job: hand out a configured SQLAlchemy `Engine` and transactions on it. SQLite connections
get WAL, `synchronous=FULL` (the commit is on disk before we answer anyone), foreign keys and a
busy timeout. Writers open with `BEGIN IMMEDIATE` so two writers queue on the lock instead of
failing half-way when a read transaction tries to upgrade.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError

from sitemail.core.errors import StoreError

__all__ = ["Store", "default_url", "open_store"]

_IMMEDIATE = "sitemail_immediate"


def default_url(data_dir: Path) -> str:
    """The embedded default: one SQLite file in the server's data dir."""
    return f"sqlite:///{data_dir / 'sitemail.db'}"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN IMMEDIATE is ours to issue.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Store:
    """A database handle; `write()` and `read()` give one transaction each."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction, committed on success, rolled back on any exception."""
        try:
            with (
                self.engine.connect().execution_options(**{_IMMEDIATE: True}) as conn,
                conn.begin(),
            ):
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"database write failed: {exc.__class__.__name__}: {exc}") from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read transaction (a consistent snapshot)."""
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"database read failed: {exc.__class__.__name__}: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str) -> Store:
    """Create the engine for `url` (no schema work; see `migrate.upgrade`)."""
    try:
        engine = create_engine(url, future=True)
    except (SQLAlchemyError, ValueError, ModuleNotFoundError) as exc:
        raise StoreError(f"cannot open database {url!r}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return Store(engine)
