"""Claims with leases: which server of the site delivers a queued message, and until when.

One job: let several servers on one database share the queue without delivering a message
twice, and let a server take over what a dead one had claimed. A server delivers a message
only under its claim (`queue_claim`: server, lease end); it renews the claims of its
deliveries in flight (`renew`), and anyone takes a claim whose lease ran out (`take`).

- `take` (a pass): locks the message rows first, on PostgreSQL with `FOR UPDATE SKIP LOCKED`
  (two servers taking at once split the due messages instead of queueing on each other's
  locks), then claims those unclaimed, already ours, or whose lease is over.
- `claim_new` (the acceptance): a message handed off in memory is claimed in the transaction
  that accepts it, so no other server's pass sees it unclaimed.
- `hold` (a local delivery's transaction): locks the message rows and keeps only those still
  ours, so a server that stalled past its lease and lost the message to another delivers
  nothing: the lock orders it against the other's `take`.
- `due_ids` / `next_due`: the pass's view, without what another server holds.

On SQLite (one server) the same claims are written and always ours; `BEGIN IMMEDIATE`
already serialises the writers.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, Connection, and_, func, insert, or_, select, update

from sitemail.queue.model import RcptState
from sitemail.store.tables import queue_claim, queue_message, queue_rcpt

__all__ = ["claim_new", "due_ids", "hold", "next_due", "renew", "take"]


def _queued() -> tuple[ColumnElement[bool], ...]:
    """A queued recipient of a message not on hold."""
    return (queue_rcpt.c.state == RcptState.QUEUED.value, queue_message.c.held.is_(False))


def _free(server: str, now: float) -> ColumnElement[bool]:
    """No claim, our claim, or one whose lease is over (the outer-joined claim row)."""
    return or_(
        queue_claim.c.queue_id.is_(None), queue_claim.c.server == server, queue_claim.c.until < now
    )


def _joined() -> object:
    return queue_rcpt.join(queue_message, queue_message.c.queue_id == queue_rcpt.c.queue_id).join(
        queue_claim, queue_claim.c.queue_id == queue_rcpt.c.queue_id, isouter=True
    )


def due_ids(conn: Connection, now: float, limit: int, server: str) -> list[str]:
    """Messages with a queued recipient due now that this server may take, oldest first."""
    rows = conn.execute(
        select(queue_rcpt.c.queue_id)
        .select_from(_joined())  # type: ignore[arg-type]
        .where(*_queued(), queue_rcpt.c.next_attempt_at <= now, _free(server, now))
        .group_by(queue_rcpt.c.queue_id)
        .order_by(func.min(queue_rcpt.c.next_attempt_at))
        .limit(limit)
    ).all()
    return [r.queue_id for r in rows]


def next_due(conn: Connection, server: str, now: float) -> float | None:
    """When this server next has something to do: the earliest due time of what it may take,
    or the earliest end of another server's lease on a queued message."""
    free = conn.execute(
        select(func.min(queue_rcpt.c.next_attempt_at))
        .select_from(_joined())  # type: ignore[arg-type]
        .where(*_queued(), _free(server, now))
    ).scalar_one_or_none()
    leased = conn.execute(
        select(func.min(queue_claim.c.until))
        .select_from(_joined())  # type: ignore[arg-type]
        .where(*_queued(), queue_claim.c.server != server, queue_claim.c.until >= now)
    ).scalar_one_or_none()
    times = [float(v) for v in (free, leased) if v is not None]
    return min(times) if times else None


def _lock(conn: Connection, ids: Sequence[str], *, skip_locked: bool) -> list[str]:
    """Lock the message rows of `ids` (PostgreSQL; SQLite's write lock covers them)."""
    query = select(queue_message.c.queue_id).where(queue_message.c.queue_id.in_(ids))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=skip_locked)
    return [r.queue_id for r in conn.execute(query)]


def take(conn: Connection, ids: Sequence[str], server: str, now: float, lease: float) -> list[str]:
    """Claim for `lease` seconds those of `ids` this server may deliver now (in its write
    transaction); the ids taken, in the order given. Rows another transaction holds are
    skipped (PostgreSQL), not waited for."""
    if not ids:
        return []
    locked = set(_lock(conn, ids, skip_locked=True))
    claims = {
        r.queue_id: (r.server, r.until)
        for r in conn.execute(select(queue_claim).where(queue_claim.c.queue_id.in_(locked)))
    }
    taken = [
        i
        for i in ids
        if i in locked and (i not in claims or claims[i][0] == server or claims[i][1] < now)
    ]
    until = now + lease
    renewed = [i for i in taken if i in claims]
    if renewed:
        conn.execute(
            update(queue_claim)
            .where(queue_claim.c.queue_id.in_(renewed))
            .values(server=server, until=until)
        )
    claim_new(conn, [i for i in taken if i not in claims], server, until)
    return taken


def claim_new(conn: Connection, ids: Sequence[str], server: str, until: float) -> None:
    """Claim messages inserted in this very transaction (nobody else can see them yet)."""
    if ids:
        conn.execute(
            insert(queue_claim), [{"queue_id": i, "server": server, "until": until} for i in ids]
        )


def renew(conn: Connection, ids: Sequence[str], server: str, until: float) -> None:
    """Move the lease end of our claims on `ids` (deliveries in flight) to `until`."""
    if ids:
        conn.execute(
            update(queue_claim)
            .where(and_(queue_claim.c.queue_id.in_(ids), queue_claim.c.server == server))
            .values(until=until)
        )


def hold(conn: Connection, ids: Sequence[str], server: str) -> set[str]:
    """Lock the message rows of `ids` until the caller's commit and return those still ours
    (or never claimed: accepted in this transaction); the rest another server took over."""
    if not ids:
        return set()
    locked = _lock(conn, ids, skip_locked=False)
    others = {
        r.queue_id
        for r in conn.execute(
            select(queue_claim.c.queue_id).where(
                queue_claim.c.queue_id.in_(locked), queue_claim.c.server != server
            )
        )
    }
    return {i for i in locked if i not in others}
