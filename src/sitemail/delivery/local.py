"""Local delivery: into this site's mailboxes, expanding groups and forwarding contacts.

One job: for recipients routed `local`, do the final step in ONE transaction together with the
queue's record of it (the queue's `ResultRecorder`: recipient state, notice, dequeueing), so a
crash at any instant leaves a message either delivered once and dequeued, or still queued
(never lost, never twice):
- mailbox: add `Return-Path` and `Delivered-To`, refuse a message that already carries our
  `Delivered-To` for this address (a mail loop, 5.4.6), append to INBOX;
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
from sitemail.directory import Directory, ObjectKind, Recipient
from sitemail.mailbox import append_message
from sitemail.queue.model import (
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    RecipientResult,
    ResultRecorder,
)
from sitemail.queue.records import (
    add_recipients,
    message_recipient_addresses,
    record_delivered,
)
from sitemail.routing.route import Route

__all__ = ["LocalDelivery"]

_DELIVERED_TO = re.compile(rb"^delivered-to:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)


def delivered_to_addresses(content: bytes) -> set[str]:
    head = content.split(b"\r\n\r\n", 1)[0]
    return {
        m.group(1).strip().decode("utf-8", "replace").lower() for m in _DELIVERED_TO.finditer(head)
    }


class LocalDelivery:
    """The `local` transport."""

    def __init__(
        self, directory: Directory, clock: Clock, site: str, record: ResultRecorder
    ) -> None:
        self._directory = directory
        self._clock = clock
        self._site = site
        self._queue_record = record

    async def deliver(
        self,
        message: QueuedMessage,
        content: bytes,
        recipients: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        return await asyncio.to_thread(self._deliver_all, message, content, recipients)

    def _deliver_all(
        self,
        message: QueuedMessage,
        content: bytes,
        recipients: Sequence[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        results: list[RecipientResult] = []
        seen = delivered_to_addresses(content)
        with self._directory.store.write() as conn:
            for rcpt, route in recipients:
                target = self._directory.get(route.nexthop) if route.nexthop else None
                results.append(
                    self._deliver_one(
                        conn, message=message, content=content, rcpt=rcpt, target=target, seen=seen
                    )
                )
            # Notices and dequeueing commit with the deliveries; failures go back to the queue.
            done = [r for r in results if r.already_recorded]
            if done:
                self._queue_record(conn, message, content, [r for r, _ in recipients], done)
        return results

    def _deliver_one(
        self,
        conn: Connection,
        *,
        message: QueuedMessage,
        content: bytes,
        rcpt: QueuedRecipient,
        target: Recipient | None,
        seen: set[str],
    ) -> RecipientResult:
        now = self._clock.now()
        address = rcpt.recipient.address
        if target is None:
            return RecipientResult(rcpt.id, Outcome.FAILED, 550, "5.1.1", "no such recipient")
        if target.kind is ObjectKind.MAILBOX:
            if address.lower() in seen or target.primary_smtp.lower() in seen:
                return RecipientResult(
                    rcpt.id,
                    Outcome.FAILED,
                    554,
                    "5.4.6",
                    f"mail loop: already delivered to {address}",
                )
            stored = (
                f"Return-Path: <{message.envelope.sender}>\r\nDelivered-To: {address}\r\n".encode()
                + content
            )
            uid = append_message(
                conn,
                target.guid,
                stored,
                now=now,
                message_id=message.message_id,
                queue_id=message.queue_id,
            )
            text = f"delivered to mailbox {target.alias} (uid {uid})"
            return self._record(
                conn, message=message, rcpt=rcpt, event="delivered", text=text, now=now
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
        return record_delivered(
            conn, message=message, rcpt=rcpt, site=self._site, event=event, text=text, now=now
        )
