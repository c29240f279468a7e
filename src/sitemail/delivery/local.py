"""Local delivery: into this site's mailboxes, expanding groups and forwarding contacts.

One job: for recipients routed `local`, do the final step in ONE transaction together with the
queue's record of it, so a crash at any instant leaves a message either delivered once and
dequeued, or still queued (never lost, never twice):
- mailbox: add `Return-Path` and `Delivered-To`, refuse a message that already carries our
  `Delivered-To` for this address (a mail loop, 5.4.6), append to INBOX (to Junk when the
  edge marked it quarantined by DMARC, mailauth.headers);
- group: add each member's primary address as a new recipient of the same queued message
  (skipping addresses it already has, which also stops nested-group cycles);
- contact: add the contact's external target as a new recipient.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from sqlalchemy import Connection

from sitemail.core.clock import Clock
from sitemail.core.envelope import EnvelopeRecipient
from sitemail.core.errors import NotFoundError
from sitemail.core.events import QueueDelivered
from sitemail.directory import Directory, ObjectKind, Recipient
from sitemail.mailauth.headers import is_quarantined
from sitemail.mailbox import Append, append_messages
from sitemail.queue.content import Content
from sitemail.queue.model import (
    Delivery,
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    RcptState,
    RecipientResult,
)
from sitemail.queue.records import (
    TrackEvent,
    add_recipients,
    content_blob,
    finish_recipient,
    finish_recipients,
    message_recipient_addresses,
    track,
)
from sitemail.routing.route import Route

__all__ = ["LocalDelivery"]

_PLACEHOLDER = RecipientResult(0, Outcome.DEFERRED, 451, "4.3.0", "not delivered yet")

_DELIVERED_TO = re.compile(rb"^delivered-to:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)


def delivered_to_addresses(content: bytes) -> set[str]:
    head = content.split(b"\r\n\r\n", 1)[0]
    return {
        m.group(1).strip().decode("utf-8", "replace").lower() for m in _DELIVERED_TO.finditer(head)
    }


def _append(
    conn: Connection, mailbox: str, head: bytes, message: QueuedMessage, content: Content
) -> Append:
    """The mailbox copy: `head` + the message; a big one copied from the queue's row inside
    the database (or written from its source), a chunk at a time."""
    if content.in_memory:
        return Append(mailbox, head + content.whole(), message.message_id, message.queue_id)
    blob = content_blob(conn, content.queue_id) if content.queue_id else None
    return Append(
        mailbox,
        head + content.prefix if blob is not None else head,
        message.message_id,
        message.queue_id,
        tail_size=content.body_size if blob is not None else content.size,
        tail_blob=blob,
        tail_chunks=() if blob is not None else content.chunks(),
    )


def _append_to_folders(
    conn: Connection, appends: list[tuple[str, Append]], now: float
) -> list[int]:
    """`append_messages` per folder; the UIDs in the order of `appends`."""
    uids = [0] * len(appends)
    for folder in dict.fromkeys(f for f, _ in appends):
        indexes = [i for i, (f, _) in enumerate(appends) if f == folder]
        got = append_messages(conn, [appends[i][1] for i in indexes], now=now, folder=folder)
        for index, uid in zip(indexes, got, strict=True):
            uids[index] = uid
    return uids


class LocalDelivery:
    """The `local` transport."""

    def __init__(self, directory: Directory, clock: Clock, site: str) -> None:
        self._directory = directory
        self._clock = clock
        self._site = site

    async def deliver(
        self,
        message: QueuedMessage,
        content: Content,
        recipients: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        return await asyncio.to_thread(self._deliver_all, message, content, recipients)

    def _deliver_all(
        self,
        message: QueuedMessage,
        content: Content,
        recipients: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        with self._directory.store.write() as conn:
            return self.deliver_in(conn, [Delivery(message, content, recipients)])[0]

    def deliver_in(
        self, conn: Connection, batch: Sequence[Delivery]
    ) -> list[list[RecipientResult]]:
        """Deliver many messages in the caller's write transaction (the queue records the
        results in it too); one list of results per message, in order.

        Mailbox deliveries of the whole batch are written together (one UID update per
        mailbox, one INSERT, one UPDATE of the queue's recipients, one INSERT of tracking
        events); groups and contacts are expanded message by message.
        """
        now = self._clock.now()
        out: list[list[RecipientResult]] = []
        appends: list[tuple[str, Append]] = []  # (folder, message)
        waiting: list[tuple[int, int, QueuedMessage, QueuedRecipient, Recipient]] = []
        targets: dict[str, Recipient] = {}
        for number, (message, content, recipients) in enumerate(batch):
            seen = delivered_to_addresses(content.head)
            results: list[RecipientResult] = []
            for rcpt, route in recipients:
                target = None
                if route.nexthop:
                    target = targets.get(route.nexthop) or self._directory.by_guid_in(
                        conn, route.nexthop
                    )
                    if target is None:
                        raise NotFoundError(f"no recipient {route.nexthop!r} in the directory")
                    targets[route.nexthop] = target
                address = rcpt.recipient.address
                if (
                    target is not None
                    and target.kind is ObjectKind.MAILBOX
                    and address.lower() not in seen
                    and target.primary_smtp.lower() not in seen
                ):
                    head = (
                        f"Return-Path: <{message.envelope.sender}>\r\nDelivered-To: {address}\r\n"
                    )
                    folder = "Junk" if is_quarantined(content.head) else "INBOX"
                    appends.append(
                        (folder, _append(conn, target.guid, head.encode(), message, content))
                    )
                    waiting.append((number, len(results), message, rcpt, target))
                    results.append(_PLACEHOLDER)
                    continue
                results.append(self._deliver_one(conn, message=message, rcpt=rcpt, target=target))
            out.append(results)
        uids = _append_to_folders(conn, appends, now)
        finished: list[tuple[int, RcptState, str, str]] = []
        events: list[TrackEvent] = []
        for (number, index, message, rcpt, target), uid in zip(waiting, uids, strict=True):
            text = f"delivered to mailbox {target.alias} (uid {uid})"
            finished.append((rcpt.id, RcptState.DELIVERED, "2.0.0", text))
            events.append(
                TrackEvent(
                    now,
                    QueueDelivered.name,
                    message.queue_id,
                    message.message_id,
                    message.envelope.sender,
                    rcpt.recipient.address,
                    self._site,
                    text,
                )
            )
            out[number][index] = RecipientResult(
                rcpt.id, Outcome.DELIVERED, 250, "2.0.0", text, already_recorded=True
            )
        finish_recipients(conn, finished, now)
        track(conn, events)
        return out

    def _deliver_one(
        self,
        conn: Connection,
        *,
        message: QueuedMessage,
        rcpt: QueuedRecipient,
        target: Recipient | None,
    ) -> RecipientResult:
        """Everything but a mailbox delivery: unknown target, a loop, a group, a contact."""
        now = self._clock.now()
        address = rcpt.recipient.address
        if target is None:
            return RecipientResult(rcpt.id, Outcome.FAILED, 550, "5.1.1", "no such recipient")
        if target.kind is ObjectKind.MAILBOX:  # only a loop gets here: deliver_in appends
            return RecipientResult(
                rcpt.id, Outcome.FAILED, 554, "5.4.6", f"mail loop: already delivered to {address}"
            )
        new = self._expansion(target)
        existing = message_recipient_addresses(conn, message.queue_id)
        fresh = [
            EnvelopeRecipient(a, rcpt.recipient.notify, rcpt.recipient.orcpt or f"rfc822;{address}")
            for a in dict.fromkeys(new)
            if a.lower() not in existing
        ]
        add_recipients(conn, message.queue_id, fresh, now)
        verb = "expanded" if target.kind is ObjectKind.GROUP else "forwarded"
        text = f"{verb} to {', '.join(r.address for r in fresh) or 'nobody new'}"
        return self._record(conn, message=message, rcpt=rcpt, event=verb, text=text, now=now)

    def _expansion(self, target: Recipient) -> list[str]:
        if target.kind is ObjectKind.CONTACT:
            return [target.target]
        members = self._directory.member_recipients(target)
        return [m.primary_smtp for m in members if m.primary_smtp]

    def _record(
        self,
        conn: Connection,
        *,
        message: QueuedMessage,
        rcpt: QueuedRecipient,
        event: str,
        text: str,
        now: float,
    ) -> RecipientResult:
        finish_recipient(
            conn, rcpt.id, state=RcptState.DELIVERED, status="2.0.0", text=text, now=now
        )
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
                    self._site,
                    text,
                )
            ],
        )
        return RecipientResult(
            rcpt.id, Outcome.DELIVERED, 250, "2.0.0", text, already_recorded=True
        )
