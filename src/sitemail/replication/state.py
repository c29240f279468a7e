"""The replication bookkeeping of one server, inside the caller's transaction.

One job: the SQL for the replication tables: the signing sequence, the up-to-dateness vector
(one watermark per naming context), per-peer and per-link counters, pending partners and the
log of rejected messages. Nothing here replicates; it is what this server knows about its
exchanges. Upserts are update-then-insert (the caller holds the write transaction).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.sql.schema import Table

from sitemail.store.tables import (
    repl_link,
    repl_peer,
    repl_pending,
    repl_rejection,
    repl_sequence,
    repl_watermark,
)

__all__ = [
    "Pending",
    "bump_link",
    "count_pending",
    "get_peer",
    "get_pending",
    "list_pending",
    "next_seq",
    "record_rejection",
    "rejection_counts",
    "set_watermark",
    "update_peer",
    "upsert",
    "watermarks",
]


def next_seq(conn: Connection) -> int:
    """The sequence number for the next message this site signs (strictly increasing)."""
    current = conn.execute(select(repl_sequence.c.seq).where(repl_sequence.c.id == 1)).scalar()
    if current is None:
        conn.execute(insert(repl_sequence).values(id=1, seq=1))
        return 1
    conn.execute(update(repl_sequence).where(repl_sequence.c.id == 1).values(seq=current + 1))
    return int(current) + 1


def watermarks(conn: Connection) -> dict[str, int]:
    return {r.nc: int(r.usn) for r in conn.execute(select(repl_watermark))}


def set_watermark(conn: Connection, nc: str, usn: int) -> None:
    upsert(conn, repl_watermark, {"nc": nc}, {"usn": usn})


def upsert(conn: Connection, table: Table, key: dict[str, Any], values: dict[str, Any]) -> None:
    """Update the row with `key`, or insert it: one statement when it exists (the caller
    holds the write transaction, so nobody inserts it in between)."""
    where = [table.c[k] == v for k, v in key.items()]
    if values and conn.execute(update(table).where(*where).values(**values)).rowcount:
        return
    if not values and conn.execute(select(func.count()).select_from(table).where(*where)).scalar():
        return
    conn.execute(insert(table).values(**key, **values))


def get_peer(conn: Connection, peer: str) -> Any:
    """The peer's row (created with zero counters on first contact)."""
    row = conn.execute(select(repl_peer).where(repl_peer.c.peer == peer)).first()
    if row is None:
        conn.execute(
            insert(repl_peer).values(
                peer=peer,
                hw_request=0,
                hw_answer=0,
                outstanding_full=False,
                requests_sent=0,
                answers_received=0,
                requests_served=0,
                objects_applied=0,
            )
        )
        row = conn.execute(select(repl_peer).where(repl_peer.c.peer == peer)).one()
    return row


def update_peer(
    conn: Connection, peer: str, *, bump: Mapping[str, int] | None = None, **values: Any
) -> None:
    """Set `values` and add to the `bump` counters of the peer's row, in one statement (two
    on first contact, when the row is made)."""
    added = {repl_peer.c[name]: repl_peer.c[name] + by for name, by in (bump or {}).items()}
    statement = update(repl_peer).where(repl_peer.c.peer == peer).values({**values, **added})
    if not conn.execute(statement).rowcount:
        get_peer(conn, peer)
        conn.execute(statement)


def bump_link(conn: Connection, peer: str, nc: str, *, applied: int, **values: Any) -> None:
    where = (repl_link.c.peer == peer, repl_link.c.nc == nc)
    changed = conn.execute(
        update(repl_link)
        .where(*where)
        .values(objects_applied=repl_link.c.objects_applied + applied, **values)
    ).rowcount
    if not changed:
        conn.execute(insert(repl_link).values(peer=peer, nc=nc, objects_applied=applied, **values))


@dataclass(frozen=True, slots=True)
class Pending:
    origin: str
    state: str
    first_seen: float
    last_seen: float
    requests: int
    public_key: str
    routing_address: str
    bridgehead: str
    verified: bool
    request: bytes


def _pending(row: Any) -> Pending:
    return Pending(
        row.origin,
        row.state,
        row.first_seen,
        row.last_seen,
        row.requests,
        row.public_key,
        row.routing_address,
        row.bridgehead,
        bool(row.verified),
        bytes(row.request),
    )


def get_pending(conn: Connection, origin: str) -> Pending | None:
    row = conn.execute(select(repl_pending).where(repl_pending.c.origin == origin)).first()
    return None if row is None else _pending(row)


def count_pending(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(repl_pending)).scalar_one())


def list_pending(conn: Connection) -> list[Pending]:
    return [_pending(r) for r in conn.execute(select(repl_pending).order_by(repl_pending.c.origin))]


def hold_pending(conn: Connection, pending: Pending) -> None:
    """Remember (or refresh) a request from a site with no connector here."""
    old = get_pending(conn, pending.origin)
    if old is None:
        conn.execute(insert(repl_pending).values(**_pending_values(pending)))
        return
    values = _pending_values(pending)
    values.update(first_seen=old.first_seen, requests=old.requests + 1, state=old.state)
    conn.execute(
        update(repl_pending).where(repl_pending.c.origin == pending.origin).values(**values)
    )


def _pending_values(p: Pending) -> dict[str, Any]:
    return {
        "origin": p.origin,
        "state": p.state,
        "first_seen": p.first_seen,
        "last_seen": p.last_seen,
        "requests": p.requests,
        "public_key": p.public_key,
        "routing_address": p.routing_address,
        "bridgehead": p.bridgehead,
        "verified": p.verified,
        "request": p.request,
    }


def drop_pending(conn: Connection, origin: str) -> None:
    conn.execute(delete(repl_pending).where(repl_pending.c.origin == origin))


def set_pending_state(conn: Connection, origin: str, state: str) -> None:
    conn.execute(update(repl_pending).where(repl_pending.c.origin == origin).values(state=state))


def record_rejection(
    conn: Connection, *, at: float, reason: str, origin: str, queue_id: str, detail: str
) -> None:
    conn.execute(
        insert(repl_rejection).values(
            at=at, reason=reason, origin=origin[:64], queue_id=queue_id, detail=detail[:2000]
        )
    )


def rejection_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(
        select(repl_rejection.c.reason, func.count()).group_by(repl_rejection.c.reason)
    )
    return {str(reason): int(count) for reason, count in rows}
