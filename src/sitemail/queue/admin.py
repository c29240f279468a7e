"""Queue operations for administrators: list, show, retry, hold, release, delete, track.

One job: the read and write operations behind `sitemail queue ...` and `sitemail track`
(and the admin API's tracking search by sender or recipient, and `message_events`, what this
site answers another site's tracking query with),
on the same tables the spool and manager use. Deleting is an explicit admin decision: it is
tracked, and sends no DSN (like `postsuper -d`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, delete, func, or_, select, update

from sitemail.core.address import DSA_LOCAL_PART
from sitemail.core.clock import Clock
from sitemail.core.errors import InvalidValueError, NotFoundError
from sitemail.queue.attempts import Attempt
from sitemail.queue.content import HEAD_LIMIT
from sitemail.queue.model import RcptState
from sitemail.queue.records import TrackEvent, track
from sitemail.queue.shape import QueueShape, read_shape
from sitemail.store.engine import Store
from sitemail.store.tables import queue_message, queue_rcpt, track_event

__all__ = ["FINAL_EVENTS", "QueueAdmin", "QueueEntry", "RecipientEntry", "message_events"]

# A listing reads every queued message's row but never its content (tens of MB for some).
_LISTED = [column for column in queue_message.c if column.name != "content"]

# What happened to a recipient in the end at this server (the live views' "recent deliveries").
FINAL_EVENTS = ("delivered", "relayed", "bounced")


@dataclass(frozen=True, slots=True)
class RecipientEntry:
    address: str
    state: str
    attempts: int
    next_attempt_at: float
    last_status: str
    last_text: str
    doing: str = ""  # an attempt in progress: what it is doing (queue.attempts)
    doing_since: float | None = None
    attempt_started: float | None = None


@dataclass(frozen=True, slots=True)
class QueueEntry:
    queue_id: str
    received_at: float
    sender: str
    size: int
    message_id: str
    held: bool
    is_dsn: bool
    recipients: list[RecipientEntry]


class QueueAdmin:
    """`attempts`: what the running server's deliveries in flight are doing (its own
    `Attempts.snapshot`, or asked over the control channel); the entries show it."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        site: str,
        attempts: Callable[[], Sequence[Attempt]] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._site = site
        self._attempts = attempts

    def entries(self) -> list[QueueEntry]:
        """Every queued message with its recipients: their state and last error from the
        database, and what an attempt in progress is doing (when the server says)."""
        with self._store.read() as conn:
            messages = conn.execute(select(*_LISTED).order_by(queue_message.c.received_at)).all()
            rcpts = conn.execute(select(queue_rcpt).order_by(queue_rcpt.c.id)).all()
        live = self._live()
        by_message: dict[str, list[RecipientEntry]] = {}
        for r in rcpts:
            attempt = live.get((r.queue_id, r.address))
            by_message.setdefault(r.queue_id, []).append(
                RecipientEntry(
                    r.address,
                    r.state,
                    r.attempts,
                    r.next_attempt_at,
                    r.last_status,
                    r.last_text,
                    doing=attempt.stage if attempt else "",
                    doing_since=attempt.since if attempt else None,
                    attempt_started=attempt.started if attempt else None,
                )
            )
        return [
            QueueEntry(
                m.queue_id,
                m.received_at,
                m.sender,
                m.size,
                m.message_id,
                m.held,
                m.is_dsn,
                by_message.get(m.queue_id, []),
            )
            for m in messages
        ]

    def shape(self) -> QueueShape:
        """Queued recipients by next hop and age (`queue shape`, the console's queue page)."""
        live = {key: attempt.nexthop for key, attempt in self._live().items()}
        with self._store.read() as conn:
            return read_shape(conn, self._clock.now(), live)

    def _live(self) -> dict[tuple[str, str], Attempt]:
        """The attempts in progress by (queue id, recipient address)."""
        if self._attempts is None:
            return {}
        return {(a.queue_id, r): a for a in self._attempts() for r in a.recipients}

    def show(self, queue_id: str) -> tuple[QueueEntry, bytes]:
        """A message and its start (its header at least; a big message is not read whole)."""
        for entry in self.entries():
            if entry.queue_id == queue_id.upper():
                with self._store.read() as conn:
                    content = conn.execute(
                        select(func.substr(queue_message.c.content, 1, HEAD_LIMIT)).where(
                            queue_message.c.queue_id == entry.queue_id
                        )
                    ).scalar_one()
                return entry, bytes(content)
        raise NotFoundError(f"no message {queue_id!r} in the queue")

    def _require(self, queue_id: str) -> str:
        key = queue_id.upper()
        with self._store.read() as conn:
            found = conn.execute(
                select(func.count())
                .select_from(queue_message)
                .where(queue_message.c.queue_id == key)
            ).scalar_one()
        if not found:
            raise NotFoundError(f"no message {queue_id!r} in the queue")
        return key

    def retry(self, queue_id: str | None) -> int:
        """Make queued recipients due now (all messages when `queue_id` is None)."""
        now = self._clock.now()
        query = update(queue_rcpt).where(queue_rcpt.c.state == RcptState.QUEUED.value)
        if queue_id is not None:
            query = query.where(queue_rcpt.c.queue_id == self._require(queue_id))
        with self._store.write() as conn:
            return int(conn.execute(query.values(next_attempt_at=now)).rowcount)

    def set_held(self, queue_id: str, held: bool) -> None:
        key = self._require(queue_id)
        with self._store.write() as conn:
            conn.execute(
                update(queue_message).where(queue_message.c.queue_id == key).values(held=held)
            )
            self._track_admin(conn, key, "held" if held else "released")

    def delete(self, queue_id: str) -> None:
        key = self._require(queue_id)
        with self._store.write() as conn:
            self._track_admin(conn, key, "deleted")
            conn.execute(delete(queue_rcpt).where(queue_rcpt.c.queue_id == key))
            conn.execute(delete(queue_message).where(queue_message.c.queue_id == key))

    def _track_admin(self, conn: Connection, key: str, event: str) -> None:
        row = conn.execute(select(queue_message).where(queue_message.c.queue_id == key)).first()
        track(
            conn,
            [
                TrackEvent(
                    self._clock.now(),
                    event,
                    key,
                    row.message_id if row else "",
                    row.sender if row else "",
                    "",
                    self._site,
                    "by administrator",
                )
            ],
        )

    def recent(
        self, limit: int = 10, events: tuple[str, ...] = FINAL_EVENTS, *, system: bool = False
    ) -> list[TrackEvent]:
        """The last `limit` tracking events of the given kinds, newest first; without the
        directory-service mailboxes' (replication) mail unless `system`."""
        query = select(track_event).where(track_event.c.event.in_(events))
        if not system:
            query = query.where(~track_event.c.recipient.startswith(f"{DSA_LOCAL_PART}@"))
        with self._store.read() as conn:
            rows = conn.execute(query.order_by(track_event.c.id.desc()).limit(limit)).all()
        return [_event(r) for r in rows]

    def track(self, ref: str) -> list[TrackEvent]:
        """Every event of a message by queue id or Message-ID (with or without <>)."""
        ref = ref.strip()
        bare = ref.strip("<>")
        with self._store.read() as conn:
            ids = {
                r.queue_id
                for r in conn.execute(
                    select(track_event.c.queue_id).where(
                        or_(
                            track_event.c.queue_id == ref.upper(),
                            track_event.c.message_id == ref,
                            track_event.c.message_id == f"<{bare}>",
                        )
                    )
                )
            }
            rows = conn.execute(
                select(track_event)
                .where(track_event.c.queue_id.in_(ids))
                .order_by(track_event.c.id)
            ).all()
        if not rows:
            raise NotFoundError(f"no tracking events for {ref!r}")
        return [_event(r) for r in rows]

    def search(
        self, *, sender: str = "", recipient: str = "", limit: int = 100
    ) -> list[TrackEvent]:
        """The latest `limit` events whose sender and/or recipient is the given address
        (case-insensitive; both given: both must match), newest first."""
        if not sender.strip() and not recipient.strip():
            raise InvalidValueError("give a sender, a recipient, or both to search for")
        query = select(track_event)
        if sender:
            query = query.where(func.lower(track_event.c.sender) == sender.strip().lower())
        if recipient:
            query = query.where(func.lower(track_event.c.recipient) == recipient.strip().lower())
        with self._store.read() as conn:
            rows = conn.execute(query.order_by(track_event.c.id.desc()).limit(limit)).all()
        return [_event(r) for r in rows]


def message_events(
    conn: Connection, message_id: str, *, limit: int | None = None
) -> tuple[list[TrackEvent], bool]:
    """Every event of the messages with this Message-ID (given with or without <>), oldest
    first; with `limit`, only the latest `limit` of them (the second value says whether
    older ones were left out: where a message ended up matters more than how it started)."""
    bare = message_id.strip().strip("<>")
    if not bare:
        return [], False
    ids = select(track_event.c.queue_id).where(track_event.c.message_id.in_((f"<{bare}>", bare)))
    query = select(track_event).where(track_event.c.queue_id.in_(ids))
    if limit is None:
        rows = conn.execute(query.order_by(track_event.c.id)).all()
        return [_event(r) for r in rows], False
    rows = conn.execute(query.order_by(track_event.c.id.desc()).limit(limit + 1)).all()
    return [_event(r) for r in reversed(rows[:limit])], len(rows) > limit


def _event(r: Row[Any]) -> TrackEvent:
    return TrackEvent(
        r.at, r.event, r.queue_id, r.message_id, r.sender, r.recipient, r.site, r.detail
    )
