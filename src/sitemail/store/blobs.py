"""Large values in SQLite, a chunk at a time: incremental blob I/O on a caller's connection.

One job: write, read and copy a row's BLOB column in pieces (SQLite's `sqlite3_blob_*`, Python's
`Connection.blobopen`), so a message of tens of megabytes never sits whole in this process's
memory on its way into, out of or across the database. A value is sized first (`zeroblob`),
then filled in place; blob I/O cannot grow a value.

Callers pass the SQLAlchemy connection of their transaction: a copy written in the writer's
transaction is read back by the same connection before the commit (the queue -> mailbox copy
of a message accepted in that very transaction). SQLite only: `supported(conn)` says whether
the connection can do it; on PostgreSQL values go whole, as before.

Rows are named by table and rowid (`rowid_of` finds it from a key column); table and column
names come from our own schema (`store.tables`), never from input.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Column, ColumnClause, Connection, Table, func, literal_column, select, update

from sitemail.store.engine import Store

__all__ = [
    "CHUNK",
    "copy_blob",
    "fill_blob",
    "read_blob",
    "read_detached",
    "rowid_of",
    "size_blob",
    "supported",
    "write_blob",
]

CHUNK = 256 * 1024  # octets per read or write: large enough to be cheap, small to stay bounded


def _rowid() -> ColumnClause[Any]:
    return literal_column("rowid")


def supported(conn: Connection) -> bool:
    """Whether `conn` can do blob I/O (SQLite)."""
    return conn.dialect.name == "sqlite"


def _raw(conn: Connection) -> Any:
    """The DBAPI (sqlite3) connection under `conn`, in `conn`'s transaction."""
    return conn.connection.driver_connection


def rowid_of(conn: Connection, column: Column[Any], key: object) -> int | None:
    """The rowid of the row of `column.table` whose `column` equals `key`, or None."""
    table = column.table
    assert isinstance(table, Table)
    row = conn.execute(select(_rowid()).select_from(table).where(column == key)).first()
    return None if row is None else int(row[0])


def size_blob(conn: Connection, column: Column[Any], rowid: int, size: int) -> None:
    """Make `column` of row `rowid` `size` zero octets long, to be filled by blob I/O."""
    table = column.table
    assert isinstance(table, Table)
    conn.execute(update(table).where(_rowid() == rowid).values({column.name: func.zeroblob(size)}))


def write_blob(
    conn: Connection, column: Column[Any], rowid: int, chunks: Iterable[bytes], *, at: int = 0
) -> int:
    """Write `chunks` into the (sized) value from offset `at`; the octets written.
    ValueError if they do not fit."""
    table = column.table
    assert isinstance(table, Table)
    written = 0
    with _raw(conn).blobopen(table.name, column.name, rowid) as blob:
        blob.seek(at)
        for chunk in chunks:
            blob.write(chunk)
            written += len(chunk)
    return written


def fill_blob(
    conn: Connection, column: Column[Any], rowid: int, size: int, chunks: Iterable[bytes]
) -> None:
    """Set the value to `size` octets taken from `chunks`, holding one chunk at a time;
    ValueError unless they are exactly `size` octets."""
    size_blob(conn, column, rowid, size)
    written = write_blob(conn, column, rowid, chunks)
    if written != size:
        raise ValueError(f"{written} octets given of the {size} announced")


def read_blob(conn: Connection, column: Column[Any], rowid: int, offset: int, size: int) -> bytes:
    """Up to `size` octets of `column` of row `rowid` from `offset` (fewer at its end)."""
    table = column.table
    assert isinstance(table, Table)
    with _raw(conn).blobopen(table.name, column.name, rowid, readonly=True) as blob:
        blob.seek(offset)
        data: bytes = blob.read(size)
    return data


def read_detached(
    store: Store, column: Column[Any], key: tuple[Column[Any], object], offset: int, size: int
) -> bytes:
    """`read_blob` of the row whose `key` (column, value) matches, outside any transaction, on this
    thread's blob reader (a small page cache: `Store.blob_reader`); OSError if it is gone."""
    (key_column, value), table = key, column.table
    assert isinstance(table, Table)
    raw = store.blob_reader()
    found = raw.execute(
        f"SELECT rowid FROM {table.name} WHERE {key_column.name} = ?",  # noqa: S608 - our schema
        (value,),
    ).fetchall()
    if not found:
        raise OSError(f"no row {value!r} in {table.name}")
    try:
        with raw.blobopen(table.name, column.name, found[0][0], readonly=True) as blob:
            blob.seek(offset)
            data: bytes = blob.read(size)
    except sqlite3.Error as exc:
        raise OSError(f"cannot read {table.name}.{column.name}: {exc}") from exc
    return data


def copy_blob(
    conn: Connection,
    source: tuple[Column[Any], int],
    target: tuple[Column[Any], int],
    *,
    at: int = 0,
) -> None:
    """Copy the whole value of `source` (column, rowid) into `target` from offset `at`
    (the target is already sized), a chunk at a time, inside SQLite."""
    (src_col, src_row), (dst_col, dst_row) = source, target
    src_table, dst_table = src_col.table, dst_col.table
    assert isinstance(src_table, Table)
    assert isinstance(dst_table, Table)
    raw = _raw(conn)
    with (
        raw.blobopen(src_table.name, src_col.name, src_row, readonly=True) as src,
        raw.blobopen(dst_table.name, dst_col.name, dst_row) as dst,
    ):
        dst.seek(at)
        while chunk := src.read(CHUNK):
            dst.write(chunk)
