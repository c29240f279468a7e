"""Tombstone collection: deletions are remembered for a while, then forgotten safely.

One job: purge tombstones older than the tombstone lifetime (30 days by default) whose USN
every partner that pulls that naming context from us has already passed (as its last request
said), so no partner can miss the deletion. A partner that never asked us for a naming context
holds none of its objects through us and needs none of its tombstones: it starts from the
current state.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, delete, select

from sitemail.store.tables import dir_object, repl_link

__all__ = ["collect_tombstones"]


def collect_tombstones(
    conn: Connection, *, partners: Iterable[str], older_than: float
) -> dict[str, int]:
    """Delete collectable tombstones; returns how many per naming context."""
    peers = sorted(set(partners))
    purged: dict[str, int] = {}
    ncs = [r[0] for r in conn.execute(select(dir_object.c.site).distinct())]
    for nc in ncs:
        passed = _lowest_partner_watermark(conn, nc, peers)
        if passed is None:
            continue
        result = conn.execute(
            delete(dir_object).where(
                dir_object.c.site == nc,
                dir_object.c.is_deleted.is_(True),
                dir_object.c.changed_at < older_than,
                dir_object.c.usn_changed <= passed,
            )
        )
        if result.rowcount:
            purged[nc] = int(result.rowcount)
    return purged


def _lowest_partner_watermark(conn: Connection, nc: str, peers: list[str]) -> int | None:
    """The smallest USN of `nc` that every partner pulling it from us has said it holds."""
    marks = [
        r.peer_watermark
        for r in conn.execute(
            select(repl_link.c.peer_watermark).where(
                repl_link.c.nc == nc, repl_link.c.peer.in_(peers)
            )
        )
    ]
    # NULL: a link row made on our side as requester; that peer never said what it holds.
    return min((int(m) for m in marks if m is not None), default=2**62)
