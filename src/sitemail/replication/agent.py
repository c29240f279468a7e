"""The `replication` transport: what the queue calls for mail to our directory-service mailbox.

One job: hand each message to the `Replicator` and record the recipient as delivered (and the
message as dequeued) in the same transaction as everything the message caused (objects
applied, answer or next request queued), then wake the queue for what was queued. A rejected
message is delivered too (it is consumed, logged and counted, never bounced): a forged message
must not make us send mail. Writes go through the server's group writer (`submit`), like every
queue write, so they share its transactions instead of competing for SQLite's lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import Connection

from sitemail.queue.model import QueuedMessage, QueuedRecipient, RecipientResult
from sitemail.queue.records import close_if_done, record_delivered
from sitemail.replication.codec import ReplicationMessage, ReplicationRejected
from sitemail.replication.replicator import Replicator
from sitemail.routing.route import Route

__all__ = ["ReplicationAgent", "Submit"]

log = logging.getLogger("sitemail.replication")

Submit = Callable[[Callable[[Connection], Any]], Awaitable[Any]]


class ReplicationAgent:
    def __init__(
        self, replicator: Replicator, *, on_enqueued: Callable[[], None], submit: Submit
    ) -> None:
        self._replicator = replicator
        self._on_enqueued = on_enqueued
        self._submit = submit
        # The directory-service mailbox is processed one message at a time, in arrival order
        # (Exchange's DS does the same): answers build on each other's watermarks.
        self._serial = asyncio.Lock()

    async def deliver(
        self,
        message: QueuedMessage,
        content: bytes,
        recipients: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        replicator = self._replicator
        async with self._serial:
            verified = await asyncio.to_thread(self._verify, content)
            if verified is not None:
                # Ask for the next batch first, in its own commit, so the peer composes it
                # while this one is applied (see Replicator.ask_ahead).
                asked = await self._submit(lambda conn: replicator.ask_ahead(conn, verified))
                if asked:
                    self._on_enqueued()
            results: list[RecipientResult] = await self._submit(
                lambda conn: self._receive(conn, message, content, recipients, verified)
            )
        self._on_enqueued()
        return results

    def _verify(self, content: bytes) -> ReplicationMessage | None:
        try:
            return self._replicator.verify(content)
        except ReplicationRejected:
            return None  # `receive` records why

    def _receive(
        self,
        conn: Connection,
        message: QueuedMessage,
        content: bytes,
        recipients: Sequence[tuple[QueuedRecipient, Route]],
        verified: ReplicationMessage | None,
    ) -> list[RecipientResult]:
        replicator = self._replicator
        now = replicator.clock.now()
        outcome = replicator.receive(conn, content, queue_id=message.queue_id, verified=verified)
        text = f"replication {outcome.outcome}: {outcome.detail}"
        if outcome.outcome != "rejected":  # refusals are logged as warnings by the replicator
            log.info("%s from %s (queue id %s)", text, outcome.origin, message.queue_id)
        results = [
            record_delivered(
                conn,
                message=message,
                rcpt=rcpt,
                site=replicator.site,
                event="delivered",
                text=text,
                now=now,
            )
            for rcpt, _ in recipients
        ]
        close_if_done(conn, message.queue_id)  # delivered and dequeued in one commit
        return results
