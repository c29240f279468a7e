"""Resends between the sites of the organisation: recognised, answered 250, not stored twice.

One job: in the transaction that stores new messages (the spool's), leave out the recipients
of a message that this site has already accepted from the same origin, and remember the
others. An origin is the sibling site that sent the message and its queue id there, proven by
the hop's signature (routing.trace.verified_origin); a message without one (from outside the
organisation, or whose signature does not verify) is stored as it is, never deduplicated.

The record is `relay_seen`: (site, origin queue id, recipient) -> our queue id, written in
the same transaction as the message, so a crash either keeps both or neither. A sending site
that crashed after our 250 but before recording it sends the message again after its
restart, with the same queue id: those recipients are dropped from the new copy (a partial
resend keeps its new recipients), and a copy left with none is not stored at all; the client
gets 250 with the queue id of the first copy. Rows are kept for `retention` seconds (the
spool gives twice the queue's expiry, so past any retry of the sender) and purged a bounded
number at a time, in the same transactions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, bindparam, delete, insert, select

from sitemail.core.envelope import EnvelopeRecipient
from sitemail.queue.model import QueueId
from sitemail.queue.records import NewMessage, TrackEvent, extract_message_id, track
from sitemail.routing.trace import Origin
from sitemail.store.tables import relay_seen

__all__ = ["Screened", "forget_older", "remember", "screen"]

_PURGE_BATCH = 1000  # rows purged by one transaction at most

_SEEN = select(relay_seen.c.recipient, relay_seen.c.queue_id).where(
    relay_seen.c.site == bindparam("b_site"), relay_seen.c.origin_id == bindparam("b_origin")
)
_REMEMBER = insert(relay_seen)
_OLD = (
    select(relay_seen.c.site, relay_seen.c.origin_id, relay_seen.c.recipient)
    .where(relay_seen.c.at < bindparam("b_before"))
    .limit(_PURGE_BATCH)
)
_FORGET = delete(relay_seen).where(
    relay_seen.c.site == bindparam("b_site"),
    relay_seen.c.origin_id == bindparam("b_origin"),
    relay_seen.c.recipient == bindparam("b_rcpt"),
)


@dataclass(slots=True)
class Screened:
    """New messages after `screen`: those to store (with only their new recipients), and
    for each message dropped whole, the queue id the first copy got."""

    fresh: list[tuple[QueueId, NewMessage]] = field(default_factory=list)
    duplicates: dict[QueueId, QueueId] = field(default_factory=dict)


def screen(
    conn: Connection, messages: Sequence[tuple[QueueId, NewMessage]], *, now: float, site: str
) -> Screened:
    """Leave out, of messages with an origin, the recipients already accepted from it (here
    before, or earlier in `messages`); a "duplicate" tracking event names each one."""
    out = Screened()
    taken: dict[tuple[str, str, str], QueueId] = {}  # this batch's, not yet in the table
    events: list[TrackEvent] = []
    for queue_id, message in messages:
        origin = message.origin
        if origin is None:
            out.fresh.append((queue_id, message))
            continue
        seen = _accepted(conn, origin)
        keep = []
        for rcpt in message.envelope.recipients:
            key = (origin.site, origin.queue_id, rcpt.address.lower())
            first = seen.get(key[2]) or taken.get(key)
            if first is None:
                keep.append(rcpt)
                taken[key] = queue_id
            else:
                events.append(_resent(message, origin, key[2], first, now=now, site=site))
                out.duplicates.setdefault(queue_id, first)
        if keep:
            out.duplicates.pop(queue_id, None)
            out.fresh.append((queue_id, _only(message, keep)))
    track(conn, events)
    return out


def _only(message: NewMessage, keep: list[EnvelopeRecipient]) -> NewMessage:
    """`message` for the recipients `keep` alone."""
    if len(keep) == len(message.envelope.recipients):
        return message
    envelope = dataclasses.replace(message.envelope, recipients=tuple(keep))
    return dataclasses.replace(message, envelope=envelope)


def _resent(
    message: NewMessage, origin: Origin, recipient: str, first: QueueId, *, now: float, site: str
) -> TrackEvent:
    """The tracking event of a recipient left out: under the first copy's queue id."""
    detail = f"resent by {origin.site} (its id {origin.queue_id}): accepted as {first}"
    message_id = extract_message_id(message.content.head)
    sender = message.envelope.sender
    return TrackEvent(now, "duplicate", first, message_id, sender, recipient, site, detail)


def _accepted(conn: Connection, origin: Origin) -> dict[str, QueueId]:
    rows = conn.execute(_SEEN, {"b_site": origin.site, "b_origin": origin.queue_id})
    return {r.recipient: QueueId(r.queue_id) for r in rows}


def remember(conn: Connection, stored: Sequence[tuple[QueueId, NewMessage]], now: float) -> None:
    """Record the origin of every stored message that has one, recipient by recipient (call
    in the transaction that stores them, after `screen`)."""
    rows = [
        {
            "site": message.origin.site,
            "origin_id": message.origin.queue_id,
            "recipient": address,
            "queue_id": queue_id,
            "at": now,
        }
        for queue_id, message in stored
        if message.origin is not None
        for address in dict.fromkeys(r.address.lower() for r in message.envelope.recipients)
    ]
    if rows:
        conn.execute(_REMEMBER, rows)


def forget_older(conn: Connection, before: float) -> int:
    """Purge records made before `before`, at most a bounded number; how many went."""
    old = [
        {"b_site": r.site, "b_origin": r.origin_id, "b_rcpt": r.recipient}
        for r in conn.execute(_OLD, {"b_before": before})
    ]
    if old:
        conn.execute(_FORGET, old)
    return len(old)
