"""Database engines: SQLite in the data dir by default, PostgreSQL by URL.

One job: hand out a configured SQLAlchemy `Engine` and transactions on it. SQLite connections
get WAL, `synchronous=FULL` (the commit is on disk before we answer anyone), foreign keys, a
busy timeout, a 32 MiB page cache (bulk changes of 100,000 objects stay in memory) and a WAL
checkpointed every 10,000 pages rather than 1,000 (see `_WAL_CHECKPOINT_PAGES`). Writers
open with `BEGIN IMMEDIATE` so two writers queue on the lock instead of failing half-way when a
read transaction tries to upgrade. A bulk writer whose keys all come from its own transaction
may skip the foreign-key checks for that transaction only (`write(check_foreign_keys=False)`).

Hot-path point reads (the address lookup on every RCPT TO) skip the pool and SQLAlchemy's
execution layer: on SQLite, `fetch_one` runs them on a long-lived DBAPI connection of the
calling thread, in autocommit, so each read sees the latest commit for ~20 us instead of ~250.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import PoolProxiedConnection

from sitemail.core.errors import StoreError, StoreUnavailableError

__all__ = ["Store", "default_url", "is_conflict", "open_store", "store_fault"]

_IMMEDIATE = "sitemail_immediate"
_BLOB_CACHE_KIB = 256  # page cache of the connections that read big values (blob_reader)


# SQLite's primary result codes that say "not now" rather than "not this" (the extended ones,
# SQLITE_IOERR_WRITE and the like, share their primary's name prefix).
_SQLITE_UNAVAILABLE = (
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_CANTOPEN",
    "SQLITE_NOMEM",
    "SQLITE_PROTOCOL",
    "SQLITE_READONLY",
)


def store_fault(exc: Exception, what: str) -> StoreError:
    """`exc` from the database as our error: `StoreUnavailableError` when the database cannot
    be used just now whatever the statement (disk full, I/O error, locked, connection lost),
    else `StoreError` (the same statement would fail again: a constraint, a bug)."""
    text = f"database {what} failed: {exc.__class__.__name__}: {exc}"
    if isinstance(exc, DisconnectionError | PoolTimeoutError):
        return StoreUnavailableError(text)
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    name = getattr(original, "sqlite_errorname", None)
    if isinstance(name, str):
        unavailable = name.startswith(_SQLITE_UNAVAILABLE)
    else:  # PostgreSQL and the rest: the DB-API's own split (connection lost, disk full...)
        unavailable = type(original).__name__ in ("OperationalError", "InterfaceError")
    return StoreUnavailableError(text) if unavailable else StoreError(text)


def is_conflict(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is the database aborting a transaction for a
    conflict with a concurrent one: a deadlock or a serialization failure (SQLSTATE class
    40), or a unique key another server's transaction inserted first (23505: two servers
    delivering the first message of a new mailbox both create its folders). Servers sharing
    a database meet these now and then; the transaction is retried, and sees the winner's rows."""
    seen: BaseException | None = exc
    while seen is not None:
        state = getattr(getattr(seen, "orig", seen), "sqlstate", None)
        if isinstance(state, str) and (state.startswith("40") or state == "23505"):
            return True
        seen = seen.__cause__
    return False


def default_url(data_dir: Path) -> str:
    """The embedded default: one SQLite file in the server's data dir."""
    return f"sqlite:///{data_dir / 'sitemail.db'}"


# Pages in the WAL before a commit copies them back into the database (SQLite's default: 1,000).
# A page changed by several commits (queue rows, counters, the growing end of each index) is
# copied back once per checkpoint, so fewer, larger checkpoints copy less. Chosen when guids
# were random (a replicated answer of 512 objects then dirtied a few hundred pages of each
# guid index): with 100,000 objects applied in answers of 512, commit 27 ms -> 17 ms per
# answer. Guids are time-ordered now (directory/objects.new_guid), which cut that far more;
# the mark stays. The WAL file grows to about 40 MiB (and stays: SQLite reuses it).
_WAL_CHECKPOINT_PAGES = 10_000


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
        cursor.execute("PRAGMA cache_size=-32768")  # KiB: 32 MiB, grown only as pages are read
        cursor.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}")
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
        self._local = threading.local()
        self._readers: list[PoolProxiedConnection] = []
        self._readers_lock = threading.Lock()

    @contextmanager
    def write(self, *, check_foreign_keys: bool = True) -> Iterator[Connection]:
        """One write transaction, committed on success, rolled back on any exception.

        `check_foreign_keys=False` is for bulk writes that take every key they write from rows
        of the same transaction: SQLite then skips the parent lookup per inserted row (it can
        only be switched outside a transaction, so it is set before BEGIN and restored after).
        """
        try:
            with self.engine.connect().execution_options(**{_IMMEDIATE: True}) as conn:
                unchecked: Any = None
                if self.is_sqlite and not check_foreign_keys:
                    unchecked = conn.connection.driver_connection
                    unchecked.execute("PRAGMA foreign_keys=OFF")
                try:
                    with conn.begin():
                        yield conn
                finally:
                    if unchecked is not None:
                        unchecked.execute("PRAGMA foreign_keys=ON")
        except SQLAlchemyError as exc:
            raise store_fault(exc, "write") from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read transaction (a consistent snapshot)."""
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except SQLAlchemyError as exc:
            raise store_fault(exc, "read") from exc

    def fetch_one(self, sql: str, params: Sequence[Any]) -> Sequence[Any] | None:
        """First row of a read-only query on this thread's own SQLite connection, or None.

        SQLite only (`is_sqlite`): `sql` is in the driver's dialect (compile a statement with
        `engine.dialect`). The connection lives outside the pool, one per thread, in autocommit.
        """
        reader: Any = getattr(self._local, "reader", None)
        try:
            if reader is None:
                proxied = self.engine.raw_connection()
                reader = proxied.driver_connection
                proxied.detach()  # outside the pool: it must never hold a pool slot
                with self._readers_lock:
                    self._readers.append(proxied)
                self._local.reader = reader
            cursor = reader.execute(sql, params)
            try:
                row: Sequence[Any] | None = cursor.fetchone()
            finally:
                cursor.close()  # ends the statement, so no read snapshot outlives the call
        except (SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as exc:
            raise store_fault(exc, "read") from exc
        return row

    def blob_reader(self) -> Any:
        """This thread's own SQLite connection for reading big values a chunk at a time
        (store/blobs.py): outside the pool, in autocommit (each read its own snapshot), with
        a page cache of `_BLOB_CACHE_KIB`: a value of tens of megabytes read through a pooled
        connection would leave up to its 32 MiB cache filled, on every pooled connection."""
        reader: Any = getattr(self._local, "blob_reader", None)
        if reader is None:
            proxied = self.engine.raw_connection()
            reader = proxied.driver_connection
            proxied.detach()
            reader.execute(f"PRAGMA cache_size=-{_BLOB_CACHE_KIB}")
            with self._readers_lock:
                self._readers.append(proxied)
            self._local.blob_reader = reader
        return reader

    def close(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for proxied in readers:
            proxied.close()
        self._local = threading.local()
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
