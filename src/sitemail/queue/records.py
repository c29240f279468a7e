"""The queue's SQL: messages, recipients and tracking events, inside a caller's transaction.

One job: read and write `queue_message`, `queue_rcpt` and `track_event` rows, so the spool, the
manager, the transports and the admin commands share one definition of the queue's state.
Recipient state only moves forward: queued -> delivered | failed; every write of a result is
guarded by `state = 'queued'`, which makes recording a result idempotent.

The statements run for every message (insert, load, finish, track, close) are built once, with
bind parameters: building and cache-keying a statement per call costs more than running it.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)

from sitemail.core.envelope import BodyType, Envelope, EnvelopeRecipient, Notify, Ret
from sitemail.queue.content import HEAD_LIMIT, MEMORY_LIMIT, Content, StoredSource
from sitemail.queue.model import (
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    QueueId,
    RcptState,
    RecipientResult,
)
from sitemail.routing.trace import Origin
from sitemail.store import blobs
from sitemail.store.engine import Store
from sitemail.store.tables import queue_message, queue_rcpt, track_event

__all__ = [
    "NewMessage",
    "TrackEvent",
    "add_recipients",
    "close_done",
    "close_finished",
    "content_blob",
    "deferred_hops",
    "finish_recipients",
    "flush_hop",
    "insert_message",
    "insert_messages",
    "load_message",
    "load_messages",
    "load_recipients",
    "new_queue_id",
    "record_delivered",
    "retry_directory_deferrals",
    "stored_content",
    "track",
]

# [^\r\n], not ".": a "." also takes the line's CR, and the field folded right after its
# colon ("Message-ID:" CRLF " <id>") then read as empty.
_MESSAGE_ID = re.compile(
    rb"^message-id:[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.IGNORECASE | re.MULTILINE
)


class _RandomHex:
    """Random hex digits from the OS, fetched 4 KiB at a time (one system call per 1,024 ids
    instead of one per id); thread-safe, as the spool and the queue both make ids."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = ""

    def take(self, digits: int) -> str:
        with self._lock:
            if len(self._pool) < digits:
                self._pool = secrets.token_hex(4096).upper()
            out, self._pool = self._pool[:digits], self._pool[digits:]
        return out


_RANDOM_HEX = _RandomHex()


def new_queue_id(now: float) -> QueueId:
    """Sortable by arrival (milliseconds, hex) and unguessable (random suffix)."""
    return QueueId(f"{int(now * 1000):011X}{_RANDOM_HEX.take(8)}")


def extract_message_id(content: bytes) -> str:
    head = content.split(b"\r\n\r\n", 1)[0]
    match = _MESSAGE_ID.search(head)
    if match is None:
        return ""
    return re.sub(rb"\s+", b"", match.group(1)).decode("utf-8", "replace")[:998]


@dataclass(frozen=True, slots=True)
class NewMessage:
    envelope: Envelope
    content: Content
    is_dsn: bool = False
    queue_id: QueueId | None = None  # pre-allocated by the SMTP session (Received header)
    origin: Origin | None = None  # a sibling site's proven origin (queue.dedupe)


@dataclass(frozen=True, slots=True)
class TrackEvent:
    at: float
    event: str
    queue_id: str
    message_id: str = ""
    sender: str = ""
    recipient: str = ""
    site: str = ""
    detail: str = ""

    def fields(self) -> dict[str, Any]:
        """Every field by name: a track_event row, or the base of its JSON and wire forms."""
        return {
            "at": self.at,
            "event": self.event,
            "queue_id": self.queue_id,
            "message_id": self.message_id,
            "sender": self.sender,
            "recipient": self.recipient,
            "site": self.site,
            "detail": self.detail,
        }


_INSERT_TRACK = insert(track_event)
_INSERT_MESSAGE = insert(queue_message)
# The recipient rows' ids, in the order given: the spool hands new messages to the queue
# manager in memory, and its results are recorded by row id (RETURNING: SQLite >= 3.35, PG).
_INSERT_RCPT = insert(queue_rcpt).returning(queue_rcpt.c.id, sort_by_parameter_order=True)
_BY_QUEUE_ID: BindParameter[str] = bindparam("b_queue_id")
_SELECT_MESSAGE = select(queue_message).where(queue_message.c.queue_id == _BY_QUEUE_ID)
_SELECT_RCPTS = (
    select(queue_rcpt).where(queue_rcpt.c.queue_id == _BY_QUEUE_ID).order_by(queue_rcpt.c.id)
)
_SELECT_RCPTS_IN_STATE = (
    select(queue_rcpt)
    .where(queue_rcpt.c.queue_id == _BY_QUEUE_ID, queue_rcpt.c.state == bindparam("b_state"))
    .order_by(queue_rcpt.c.id)
)
_FINISH_RCPT = (
    update(queue_rcpt)
    .where(
        and_(
            queue_rcpt.c.id == bindparam("b_id"),
            queue_rcpt.c.state == RcptState.QUEUED.value,
        )
    )
    .values(
        state=bindparam("b_state"),
        last_status=bindparam("b_status"),
        last_text=bindparam("b_text"),
        attempts=queue_rcpt.c.attempts + 1,
        first_attempt_at=func.coalesce(queue_rcpt.c.first_attempt_at, bindparam("b_now")),
    )
)
_COUNT_QUEUED = (
    select(func.count())
    .select_from(queue_rcpt)
    .where(queue_rcpt.c.queue_id == _BY_QUEUE_ID, queue_rcpt.c.state == RcptState.QUEUED.value)
)
_IDS: BindParameter[list[str]] = bindparam("b_ids", expanding=True)
_SIZES_IN = select(queue_message.c.queue_id, queue_message.c.size).where(
    queue_message.c.queue_id.in_(_IDS)
)
_MESSAGES_IN = select(queue_message).where(queue_message.c.queue_id.in_(_IDS))
# SQLite: a big message's content stays in the database (read in chunks later); its rowid
# finds its header, read with blob I/O.
_MESSAGES_IN_HEADLESS = select(
    *(c for c in queue_message.c if c.name != "content"),
    case((queue_message.c.size <= MEMORY_LIMIT, queue_message.c.content), else_=None).label(
        "content"
    ),
    literal_column("rowid").label("row_number"),
).where(queue_message.c.queue_id.in_(_IDS))
_RCPTS_IN = select(queue_rcpt).where(queue_rcpt.c.queue_id.in_(_IDS)).order_by(queue_rcpt.c.id)
_STILL_QUEUED_IN = (
    select(queue_rcpt.c.queue_id)
    .where(queue_rcpt.c.queue_id.in_(_IDS), queue_rcpt.c.state == RcptState.QUEUED.value)
    .distinct()
)
_DELETE_RCPTS_IN = delete(queue_rcpt).where(queue_rcpt.c.queue_id.in_(_IDS))
_DELETE_MESSAGES_IN = delete(queue_message).where(queue_message.c.queue_id.in_(_IDS))
_DELETE_RCPTS = delete(queue_rcpt).where(queue_rcpt.c.queue_id == _BY_QUEUE_ID)
_DELETE_MESSAGE = delete(queue_message).where(queue_message.c.queue_id == _BY_QUEUE_ID)


def track(conn: Connection, events: Sequence[TrackEvent]) -> None:
    if events:
        conn.execute(_INSERT_TRACK, [e.fields() for e in events])


def _envelope_json(env: Envelope) -> dict[str, Any]:
    return {
        "ret": env.ret.value if env.ret else "",
        "envid": env.envid,
        "body": env.body.value,
        "smtputf8": env.smtputf8,
        "client_address": env.client_address,
        "client_name": env.client_name,
        "authenticated_as": env.authenticated_as,
        "extra": env.extra,
    }


def _recipient_row(queue_id: str, rcpt: EnvelopeRecipient, now: float) -> dict[str, Any]:
    return {
        "queue_id": queue_id,
        "address": rcpt.address,
        "notify": ",".join(sorted(n.value for n in rcpt.notify)),
        "orcpt": rcpt.orcpt,
        "state": RcptState.QUEUED.value,
        "attempts": 0,
        "next_attempt_at": now,
        "first_attempt_at": None,
        "last_status": "",
        "last_text": "",
        "delay_notified": False,
    }


def insert_message(
    conn: Connection, queue_id: QueueId, message: NewMessage, now: float, site: str
) -> str:
    """Write one message and its recipients; returns its Message-ID."""
    queued, _ = insert_messages(conn, [(queue_id, message)], now, site)[0]
    return queued.message_id


def insert_messages(
    conn: Connection, messages: Sequence[tuple[QueueId, NewMessage]], now: float, site: str
) -> list[tuple[QueuedMessage, list[QueuedRecipient]]]:
    """Write messages and their recipients, three statements for all; returns each message
    as the queue will see it (recipients with their row ids), as `load_messages` would."""
    message_rows: list[dict[str, Any]] = []
    rcpt_rows: list[dict[str, Any]] = []
    events: list[TrackEvent] = []
    streamed: list[tuple[QueueId, Content]] = []  # written in chunks once their rows exist
    for queue_id, message in messages:
        content = message.content
        env = message.envelope
        if content.in_memory or not blobs.supported(conn):
            value = content.whole()  # PostgreSQL: big messages too, for now
            message_id = extract_message_id(value)
        else:
            value = b""
            message_id = extract_message_id(content.head)
            streamed.append((queue_id, content))
        message_rows.append(
            {
                "queue_id": queue_id,
                "received_at": now,
                "sender": env.sender,
                "envelope": _envelope_json(env),
                "message_id": message_id,
                "size": content.size,
                "content": value,
                "is_dsn": message.is_dsn,
                "held": False,
                "done": False,
            }
        )
        rcpt_rows.extend(_recipient_row(queue_id, r, now) for r in env.recipients)
        detail = f"from {env.client_address}" if env.client_address else "generated"
        events.extend(
            TrackEvent(now, "received", queue_id, message_id, env.sender, r.address, site, detail)
            for r in env.recipients
        )
    if not message_rows:
        return []
    conn.execute(_INSERT_MESSAGE, message_rows)
    for queue_id, content in streamed:
        rowid = blobs.rowid_of(conn, queue_message.c.queue_id, queue_id)
        assert rowid is not None  # inserted just above, in this transaction
        blobs.fill_blob(conn, queue_message.c.content, rowid, content.size, content.chunks())
    rcpt_ids = iter(conn.execute(_INSERT_RCPT, rcpt_rows).scalars().all() if rcpt_rows else [])
    track(conn, events)
    out = []
    for (queue_id, message), row in zip(messages, message_rows, strict=True):
        env = message.envelope
        queued = QueuedMessage(
            queue_id=queue_id,
            envelope=env,
            received_at=now,
            size=message.content.size,
            message_id=row["message_id"],
            is_dsn=message.is_dsn,
        )
        recipients = [
            QueuedRecipient(
                id=next(rcpt_ids),
                queue_id=queue_id,
                recipient=r,
                attempts=0,
                first_attempt_at=None,
                delay_notified=False,
            )
            for r in env.recipients
        ]
        out.append((queued, recipients))
    return out


def stored_content(store: Store, queue_id: str, content: Content) -> Content:
    """`content` as the queue holds it once committed under `queue_id`: up to
    `MEMORY_LIMIT`, in memory (as `load_messages` gives it); a bigger one read from its row
    in chunks (PostgreSQL: whole, for now). Call it while `content` is readable."""
    if content.in_memory:
        return content
    if not store.is_sqlite or content.size <= MEMORY_LIMIT:
        return Content.of(content.whole())
    return Content.behind(StoredSource(store, queue_id), content.size, content.head)


def content_blob(conn: Connection, queue_id: str) -> tuple[Any, int] | None:
    """Where a queued message's content lies, for blob I/O: (column, rowid); None if gone."""
    rowid = blobs.rowid_of(conn, queue_message.c.queue_id, queue_id)
    return None if rowid is None else (queue_message.c.content, rowid)


def add_recipients(
    conn: Connection, queue_id: str, recipients: Iterable[EnvelopeRecipient], now: float
) -> int:
    """Add recipients to a queued message (group expansion, contact forwarding)."""
    rows = [_recipient_row(queue_id, r, now) for r in recipients]
    if rows:
        conn.execute(insert(queue_rcpt), rows)
        conn.execute(
            update(queue_message).where(queue_message.c.queue_id == queue_id).values(done=False)
        )
    return len(rows)


def message_recipient_addresses(conn: Connection, queue_id: str) -> set[str]:
    rows = conn.execute(select(queue_rcpt.c.address).where(queue_rcpt.c.queue_id == queue_id))
    return {r.address.lower() for r in rows}


def _to_envelope(row: Any, recipients: tuple[EnvelopeRecipient, ...]) -> Envelope:
    data = row.envelope
    return Envelope(
        sender=row.sender,
        recipients=recipients,
        ret=Ret(data["ret"]) if data.get("ret") else None,
        envid=data.get("envid", ""),
        body=BodyType(data.get("body", "7BIT")),
        smtputf8=bool(data.get("smtputf8", False)),
        client_address=data.get("client_address", ""),
        client_name=data.get("client_name", ""),
        authenticated_as=data.get("authenticated_as", ""),
        extra=dict(data.get("extra", {})),
    )


def to_recipient(row: Any) -> QueuedRecipient:
    notify = frozenset(Notify(n) for n in row.notify.split(",") if n)
    return QueuedRecipient(
        id=row.id,
        queue_id=QueueId(row.queue_id),
        recipient=EnvelopeRecipient(row.address, notify, row.orcpt),
        attempts=row.attempts,
        first_attempt_at=row.first_attempt_at,
        delay_notified=row.delay_notified,
    )


def load_message(conn: Connection, queue_id: str) -> tuple[QueuedMessage, Content] | None:
    row = conn.execute(_SELECT_MESSAGE, {"b_queue_id": queue_id}).first()
    if row is None:
        return None
    rcpts = conn.execute(_SELECT_RCPTS, {"b_queue_id": queue_id}).all()
    envelope = _to_envelope(row, tuple(to_recipient(r).recipient for r in rcpts))
    message = QueuedMessage(
        queue_id=QueueId(row.queue_id),
        envelope=envelope,
        received_at=row.received_at,
        size=row.size,
        message_id=row.message_id,
        is_dsn=row.is_dsn,
    )
    return message, Content.of(bytes(row.content))


def _in_memory(size: int, store: Store | None) -> int:
    """What loading a message of `size` octets costs in memory (a big one: its head)."""
    return min(size, HEAD_LIMIT) if store is not None and size > MEMORY_LIMIT else size


def _content(conn: Connection, row: Any, store: Store | None) -> Content:
    """A loaded row's content: bytes, or (a big one, SQLite, `store` given) its handle."""
    if row.content is not None:
        return Content.of(bytes(row.content))
    assert store is not None
    head = blobs.read_blob(conn, queue_message.c.content, row.row_number, 0, HEAD_LIMIT)
    return Content.behind(StoredSource(store, row.queue_id), row.size, head)


def load_messages(
    conn: Connection,
    queue_ids: Sequence[str],
    *,
    max_bytes: int | None = None,
    store: Store | None = None,
) -> list[tuple[QueuedMessage, Content, list[tuple[QueuedRecipient, Any]]]]:
    """Messages with all their recipients (rows too), in the order of `queue_ids`; missing
    ones are left out. With `max_bytes`, only the first messages whose content fits (always
    at least one) are loaded. With the `store` (SQLite), a message over
    `content.MEMORY_LIMIT` is loaded as a handle that reads it in chunks later, and counts
    for its head only."""
    ids = list(dict.fromkeys(queue_ids))
    streaming = store is not None and blobs.supported(conn)
    if max_bytes is not None and ids:
        sizes = {r.queue_id: int(r.size) for r in conn.execute(_SIZES_IN, {"b_ids": ids})}
        ids = [i for i in ids if i in sizes]
        total, keep = 0, 0
        for queue_id in ids:
            total += _in_memory(sizes[queue_id], store if streaming else None)
            keep += 1
            if total >= max_bytes:
                break
        ids = ids[:keep]
    if not ids:
        return []
    query = _MESSAGES_IN_HEADLESS if streaming else _MESSAGES_IN
    rows = {r.queue_id: r for r in conn.execute(query, {"b_ids": ids})}
    rcpts: dict[str, list[Any]] = {}
    for r in conn.execute(_RCPTS_IN, {"b_ids": ids}):
        rcpts.setdefault(r.queue_id, []).append(r)
    out = []
    for queue_id in ids:
        row = rows.get(queue_id)
        if row is None:
            continue
        recipients = [(to_recipient(r), r) for r in rcpts.get(queue_id, [])]
        envelope = _to_envelope(row, tuple(q.recipient for q, _ in recipients))
        message = QueuedMessage(
            queue_id=QueueId(row.queue_id),
            envelope=envelope,
            received_at=row.received_at,
            size=row.size,
            message_id=row.message_id,
            is_dsn=row.is_dsn,
        )
        out.append((message, _content(conn, row, store if streaming else None), recipients))
    return out


def load_recipients(
    conn: Connection, queue_id: str, state: RcptState | None = None
) -> list[tuple[QueuedRecipient, Any]]:
    if state is None:
        rows = conn.execute(_SELECT_RCPTS, {"b_queue_id": queue_id}).all()
    else:
        rows = conn.execute(
            _SELECT_RCPTS_IN_STATE, {"b_queue_id": queue_id, "b_state": state.value}
        ).all()
    return [(to_recipient(r), r) for r in rows]


def due_queue_ids(conn: Connection, now: float, limit: int) -> list[str]:
    """Messages with at least one queued recipient due now, oldest first, not held."""
    rows = conn.execute(
        select(queue_rcpt.c.queue_id)
        .join(queue_message, queue_message.c.queue_id == queue_rcpt.c.queue_id)
        .where(
            queue_rcpt.c.state == RcptState.QUEUED.value,
            queue_rcpt.c.next_attempt_at <= now,
            queue_message.c.held.is_(False),
        )
        .group_by(queue_rcpt.c.queue_id)
        .order_by(func.min(queue_rcpt.c.next_attempt_at))
        .limit(limit)
    ).all()
    return [r.queue_id for r in rows]


def next_due_at(conn: Connection) -> float | None:
    value = conn.execute(
        select(func.min(queue_rcpt.c.next_attempt_at))
        .join(queue_message, queue_message.c.queue_id == queue_rcpt.c.queue_id)
        .where(queue_rcpt.c.state == RcptState.QUEUED.value, queue_message.c.held.is_(False))
    ).scalar_one_or_none()
    return None if value is None else float(value)


def finish_recipient(
    conn: Connection, rcpt_id: int, *, state: RcptState, status: str, text: str, now: float
) -> bool:
    """Move a queued recipient to a final state; False if it was already final (idempotent)."""
    result = conn.execute(
        _FINISH_RCPT,
        {"b_id": rcpt_id, "b_state": state.value, "b_status": status, "b_text": text, "b_now": now},
    )
    return bool(result.rowcount)


def finish_recipients(
    conn: Connection, finished: Sequence[tuple[int, RcptState, str, str]], now: float
) -> None:
    """`finish_recipient` for many (id, state, status, text) in one statement."""
    if finished:
        conn.execute(
            _FINISH_RCPT,
            [
                {"b_id": i, "b_state": st.value, "b_status": status, "b_text": text, "b_now": now}
                for i, st, status, text in finished
            ],
        )


def defer_recipient(
    conn: Connection,
    rcpt_id: int,
    *,
    status: str,
    text: str,
    now: float,
    next_at: float,
    nexthop: str = "",
) -> None:
    """Count a failed attempt and set the next; `nexthop` ("transport host") is where it
    failed ("" when routing deferred it), which a later delivery there flushes."""
    conn.execute(
        update(queue_rcpt)
        .where(queue_rcpt.c.id == rcpt_id, queue_rcpt.c.state == RcptState.QUEUED.value)
        .values(
            last_status=status,
            last_text=text,
            attempts=queue_rcpt.c.attempts + 1,
            next_attempt_at=next_at,
            first_attempt_at=func.coalesce(queue_rcpt.c.first_attempt_at, now),
            nexthop=nexthop,
        )
    )


def flush_hop(conn: Connection, nexthop: str, now: float) -> int:
    """Make due now every queued recipient last deferred at `nexthop` (it just took a
    message: Postfix's flush of a destination's deferred mail). Returns how many."""
    c = queue_rcpt.c
    result = conn.execute(
        update(queue_rcpt)
        .where(c.state == RcptState.QUEUED.value, c.nexthop == nexthop, c.next_attempt_at > now)
        .values(next_attempt_at=now)
    )
    return int(result.rowcount or 0)


def deferred_hops(conn: Connection) -> set[str]:
    """The next hops that queued recipients were last deferred at."""
    c = queue_rcpt.c
    rows = conn.execute(
        select(c.nexthop)
        .where(c.state == RcptState.QUEUED.value, c.nexthop.is_not(None), c.nexthop != "")
        .distinct()
    )
    return {str(row[0]) for row in rows}


def retry_directory_deferrals(conn: Connection, now: float) -> int:
    """Make due now every recipient that routing deferred for want of directory knowledge
    (not in the directory here yet 4.4.3, a loop while the sites disagree 4.4.6, no path to
    its home site 4.4.0): the directory just changed, so the next pass may route it. The
    attempt count stays, so the retry schedule of a recipient that still waits is unchanged
    in shape. Returns how many became due."""
    c = queue_rcpt.c
    waiting = or_(
        c.last_status.in_(("4.4.3", "4.4.6")),
        and_(c.last_status == "4.4.0", c.last_text.startswith("no route to site")),
    )
    result = conn.execute(
        update(queue_rcpt)
        .where(c.state == RcptState.QUEUED.value, c.next_attempt_at > now, waiting)
        .values(next_attempt_at=now)
    )
    return int(result.rowcount or 0)


def mark_delay_notified(conn: Connection, rcpt_ids: Sequence[int]) -> None:
    if rcpt_ids:
        conn.execute(
            update(queue_rcpt)
            .where(queue_rcpt.c.id.in_(list(rcpt_ids)))
            .values(delay_notified=True)
        )


def close_if_done(conn: Connection, queue_id: str) -> bool:
    """Drop a message whose recipients are all final (its tracking events remain)."""
    key = {"b_queue_id": queue_id}
    if conn.execute(_COUNT_QUEUED, key).scalar_one():
        return False
    conn.execute(_DELETE_RCPTS, key)
    conn.execute(_DELETE_MESSAGE, key)
    return True


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def close_done(conn: Connection, queue_ids: Sequence[str]) -> list[str]:
    """`close_if_done` for many messages in three statements; returns those dropped."""
    ids = list(dict.fromkeys(queue_ids))
    if not ids:
        return []
    busy = set(conn.execute(_STILL_QUEUED_IN, {"b_ids": ids}).scalars())
    done = [i for i in ids if i not in busy]
    if done:
        conn.execute(_DELETE_RCPTS_IN, {"b_ids": done})
        conn.execute(_DELETE_MESSAGES_IN, {"b_ids": done})
    return done


def close_finished(conn: Connection) -> list[str]:
    """Drop every message none of whose recipients is still queued (run at start: a crash
    between a delivery's commit and the pass's closing commit may have left some)."""
    ids = [r[0] for r in conn.execute(select(queue_message.c.queue_id))]
    dropped: list[str] = []
    for start in range(0, len(ids), 500):
        dropped += close_done(conn, ids[start : start + 500])
    return dropped


def record_delivered(
    conn: Connection,
    *,
    message: QueuedMessage,
    rcpt: QueuedRecipient,
    site: str,
    event: str,
    text: str,
    now: float,
) -> RecipientResult:
    """A transport's final step inside its own transaction: recipient done, event tracked."""
    finish_recipient(conn, rcpt.id, state=RcptState.DELIVERED, status="2.0.0", text=text, now=now)
    track(
        conn,
        [
            TrackEvent(
                now,
                event,
                message.queue_id,
                message.message_id,
                message.envelope.sender,
                rcpt.recipient.address,
                site,
                text,
            )
        ],
    )
    return RecipientResult(rcpt.id, Outcome.DELIVERED, 250, "2.0.0", text, already_recorded=True)
