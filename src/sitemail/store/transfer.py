"""Copy a whole database to another engine: `sitemail store migrate --to postgresql://...`.

One job: move every row of every table of our schema from one store to an empty one at the
same revision, keys and all (queue ids, recipient row ids, folder ids, UIDs, USNs, replication
watermarks and sequence numbers are values a client, a peer or the queue holds on to), in
one transaction on the target, so a failed copy leaves the target empty. Tables go parents
first (`metadata.sorted_tables`), rows in batches; a message's content is one value, so a
batch holds at most `_BATCH` messages in memory. On PostgreSQL each identity column's sequence
is then moved past the highest copied id, so new rows never collide with copied ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Connection, Table, func, insert, select, text

from sitemail.core.errors import ConflictError
from sitemail.store.engine import Store
from sitemail.store.migrate import current_revision, upgrade
from sitemail.store.tables import metadata, organization

__all__ = ["CopyReport", "copy_store"]

_BATCH = 200


@dataclass(frozen=True, slots=True)
class CopyReport:
    """Rows copied, per table (every table of the schema, zeros included)."""

    rows: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def _batches(conn: Connection, table: Table) -> Iterator[list[dict[str, object]]]:
    result = conn.execution_options(yield_per=_BATCH).execute(select(table))
    for part in result.partitions(_BATCH):
        yield [dict(row._mapping) for row in part]


def _move_sequences(conn: Connection, table: Table) -> None:
    """PostgreSQL: the sequence of `table`'s integer key continues after the copied rows."""
    keys = [
        c for c in table.primary_key.columns if c.autoincrement is True or c.autoincrement == "auto"
    ]
    if len(table.primary_key.columns) != 1 or not keys:
        return
    column = keys[0]
    if column.type.python_type is not int:
        return
    highest = conn.execute(select(func.max(column))).scalar_one_or_none()
    if highest is None:
        return
    conn.execute(
        text("SELECT setval(pg_get_serial_sequence(:t, :c), :v)"),
        {"t": table.name, "c": column.name, "v": int(highest)},
    )


def copy_store(source: Store, target: Store) -> CopyReport:
    """Copy every row of `source` into `target` (made current; it must be empty)."""
    upgrade(source)
    upgrade(target)
    if current_revision(source) != current_revision(target):
        raise ConflictError("source and target databases are at different revisions")
    with target.read() as conn:
        if conn.execute(select(func.count()).select_from(organization)).scalar_one():
            raise ConflictError("the target database is not empty: it holds an organisation")
    rows: dict[str, int] = {}
    with source.read() as reading, target.write() as writing:
        for table in metadata.sorted_tables:
            count = 0
            for batch in _batches(reading, table):
                writing.execute(insert(table), batch)
                count += len(batch)
            rows[table.name] = count
            if writing.dialect.name == "postgresql":
                _move_sequences(writing, table)
    return CopyReport(rows)
