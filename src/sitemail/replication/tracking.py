"""Message tracking across sites: the bookkeeping of track-queries and their answers.

One job: the SQL and the wire form behind `Replicator.ask_track` and its answers, inside the
caller's transaction. A query (token, Message-ID) is recorded with one row per site asked;
a verified answer stores that site's events under the token and marks the site answered.
Answers are accepted only for a token we issued, from a site we asked, once: anything else is
ignored. Every tracking message taken leaves its (origin, seq) until it expires, so the same
message again is a replay, without touching the replication high-water marks (a query must
never make a directory answer look replayed, nor the other way round).

Wire form of an answer's events: a list of at most `MAX_EVENTS` objects with `at`, `event`,
`queue_id`, `message_id`, `sender`, `recipient`, `detail`; the answering site is the verified
origin of the answer, never a field in it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from sitemail.queue.records import TrackEvent
from sitemail.store.tables import track_query, track_query_site, track_remote_event, track_seen

__all__ = [
    "MAX_EVENTS",
    "MAX_MESSAGE_ID",
    "RETENTION",
    "SiteAnswer",
    "TrackQuery",
    "events_from_wire",
    "events_to_wire",
    "get_query",
    "latest_query",
    "mark_seen",
    "normalize_message_id",
    "prune",
    "record_query",
    "remote_events",
    "store_answer",
]

MAX_EVENTS = 200  # per answer: a message with thousands of recipients stays one small mail
MAX_MESSAGE_ID = 998  # RFC 5322's line limit, as the queue stores it
RETENTION = 7 * 86400.0  # queries and their answers are forgotten after a week

# Column sizes of track_remote_event: a remote value is cut to fit, never refused for it.
_LIMITS = {
    "event": 16,
    "queue_id": 32,
    "message_id": MAX_MESSAGE_ID,
    "sender": 320,
    "recipient": 320,
    "detail": 2000,
}


@dataclass(frozen=True, slots=True)
class SiteAnswer:
    """One site asked by a query, and whether (and with how many events) it answered."""

    site: str
    answered_at: float | None
    events: int
    truncated: bool  # the site had more events than an answer carries (the latest are kept)

    @property
    def answered(self) -> bool:
        return self.answered_at is not None


@dataclass(frozen=True, slots=True)
class TrackQuery:
    token: str
    message_id: str
    asked_at: float
    sites: tuple[SiteAnswer, ...]


def normalize_message_id(value: str) -> str:
    """`<id@host>` whether given with or without its angle brackets ("" for nothing)."""
    bare = value.strip().strip("<>").strip()
    return f"<{bare}>" if bare else ""


# -- the asking side --------------------------------------------------------------------------


def record_query(
    conn: Connection, token: str, message_id: str, sites: Sequence[str], now: float
) -> None:
    conn.execute(insert(track_query).values(token=token, message_id=message_id, asked_at=now))
    if sites:
        conn.execute(
            insert(track_query_site),
            [{"token": token, "site": s, "events": 0, "truncated": False} for s in sites],
        )


def prune(conn: Connection, now: float) -> None:
    """Forget queries older than RETENTION with their answers, and expired seen-marks."""
    old = select(track_query.c.token).where(track_query.c.asked_at < now - RETENTION)
    conn.execute(delete(track_remote_event).where(track_remote_event.c.token.in_(old)))
    conn.execute(delete(track_query_site).where(track_query_site.c.token.in_(old)))
    conn.execute(delete(track_query).where(track_query.c.asked_at < now - RETENTION))
    conn.execute(delete(track_seen).where(track_seen.c.expires < now))


def latest_query(conn: Connection, message_id: str) -> TrackQuery | None:
    """The newest query for this Message-ID, with each site's state."""
    row = conn.execute(
        select(track_query)
        .where(track_query.c.message_id == message_id)
        .order_by(track_query.c.asked_at.desc(), track_query.c.token)
        .limit(1)
    ).first()
    return None if row is None else _query(conn, row)


def get_query(conn: Connection, token: str) -> TrackQuery | None:
    """The query with this token, with each site's state."""
    row = conn.execute(select(track_query).where(track_query.c.token == token)).first()
    return None if row is None else _query(conn, row)


def _query(conn: Connection, row: Any) -> TrackQuery:
    sites = conn.execute(
        select(track_query_site)
        .where(track_query_site.c.token == row.token)
        .order_by(track_query_site.c.site)
    ).all()
    return TrackQuery(
        row.token,
        row.message_id,
        row.asked_at,
        tuple(SiteAnswer(s.site, s.answered_at, s.events, bool(s.truncated)) for s in sites),
    )


def remote_events(conn: Connection, message_id: str) -> list[TrackEvent]:
    """Each site's events from its latest answer about this Message-ID (so asking again
    replaces what a site said before, and a site that did not answer the newest query
    still shows what it said last)."""
    answered = conn.execute(
        select(track_query_site.c.token, track_query_site.c.site)
        .join(track_query, track_query.c.token == track_query_site.c.token)
        .where(
            track_query.c.message_id == message_id,
            track_query_site.c.answered_at.is_not(None),
        )
        .order_by(track_query_site.c.answered_at.desc())
    ).all()
    latest: dict[str, str] = {}
    for token, site in answered:
        latest.setdefault(site, token)
    events: list[TrackEvent] = []
    for site, token in sorted(latest.items()):
        rows = conn.execute(
            select(track_remote_event)
            .where(track_remote_event.c.token == token, track_remote_event.c.site == site)
            .order_by(track_remote_event.c.id)
        ).all()
        events += [
            TrackEvent(
                r.at, r.event, r.queue_id, r.message_id, r.sender, r.recipient, r.site, r.detail
            )
            for r in rows
        ]
    return events


def store_answer(
    conn: Connection,
    token: str,
    site: str,
    events: Sequence[TrackEvent],
    *,
    truncated: bool,
    now: float,
) -> str:
    """Take `site`'s answer to query `token`: "stored", or why not ("unknown-token" when we
    never asked `site` with it, "answered-already")."""
    row = conn.execute(
        select(track_query_site).where(
            track_query_site.c.token == token, track_query_site.c.site == site
        )
    ).first()
    if row is None:
        return "unknown-token"
    if row.answered_at is not None:
        return "answered-already"
    if events:
        conn.execute(
            insert(track_remote_event),
            # `site` is the answer's verified origin, whatever the events say
            [{**e.fields(), "token": token, "site": site} for e in events],
        )
    conn.execute(
        update(track_query_site)
        .where(track_query_site.c.token == token, track_query_site.c.site == site)
        .values(answered_at=now, events=len(events), truncated=truncated)
    )
    return "stored"


# -- both sides -------------------------------------------------------------------------------


def mark_seen(conn: Connection, origin: str, seq: int, expires: float, now: float) -> bool:
    """Remember a tracking message; False when it was taken before (a replay). Marks of
    expired messages go first: those are refused as expired before they get here, and a
    site that only answers never prunes otherwise."""
    conn.execute(delete(track_seen).where(track_seen.c.expires < now))
    where = (track_seen.c.origin == origin, track_seen.c.seq == seq)
    if conn.execute(select(track_seen.c.seq).where(*where)).first() is not None:
        return False
    conn.execute(insert(track_seen).values(origin=origin, seq=seq, expires=expires))
    return True


def events_to_wire(events: Sequence[TrackEvent]) -> list[dict[str, Any]]:
    """The events an answer carries: no site (the receiver takes the signer's), details cut."""
    wire = []
    for e in events:
        fields = e.fields()
        del fields["site"]
        fields["detail"] = e.detail[: _LIMITS["detail"]]
        wire.append(fields)
    return wire


def events_from_wire(value: object, site: str) -> list[TrackEvent] | None:
    """An answer's events as `site`'s (its verified origin), or None when malformed."""
    if not isinstance(value, list) or len(value) > MAX_EVENTS:
        return None
    events = [_event_from_wire(item, site) for item in value]
    return None if any(e is None for e in events) else [e for e in events if e is not None]


def _event_from_wire(item: object, site: str) -> TrackEvent | None:
    if not isinstance(item, Mapping):
        return None
    at = item.get("at")
    if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
        return None
    texts = {name: item.get(name, "") for name in _LIMITS}
    if not all(isinstance(v, str) for v in texts.values()) or not texts["event"]:
        return None
    cut = {name: str(v)[: _LIMITS[name]] for name, v in texts.items()}
    return TrackEvent(
        float(at),
        cut["event"],
        cut["queue_id"],
        cut["message_id"],
        cut["sender"],
        cut["recipient"],
        site,
        cut["detail"],
    )
