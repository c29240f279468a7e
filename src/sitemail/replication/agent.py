"""The `replication` transport: what the queue calls for mail to our directory-service mailbox.

One job: hand each message to the `Replicator` and record the recipient as delivered (and the
message as dequeued) in the same transaction as everything the message caused (objects
applied, answer or next request queued), then wake the queue for what was queued. A rejected message is delivered too (it is
consumed, logged and counted, never bounced): a forged message must not make us send mail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from sitemail.queue.model import (
    QueuedMessage,
    QueuedRecipient,
    RecipientResult,
    ResultRecorder,
)
from sitemail.queue.records import record_delivered
from sitemail.replication.codec import ReplicationMessage, ReplicationRejected
from sitemail.replication.replicator import Replicator
from sitemail.routing.route import Route

__all__ = ["ReplicationAgent"]


class ReplicationAgent:
    def __init__(
        self, replicator: Replicator, *, on_enqueued: Callable[[], None], record: ResultRecorder
    ) -> None:
        self._replicator = replicator
        self._on_enqueued = on_enqueued
        self._queue_record = record
        # The directory-service mailbox is processed on one thread, in arrival order
        # (Exchange's DS does the same): answers build on each other's watermarks.
        self._serial = asyncio.Lock()

    async def deliver(
        self,
        message: QueuedMessage,
        content: bytes,
        recipients: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        async with self._serial:
            verified, asked = await asyncio.to_thread(self._ask_ahead, content)
            if asked:
                self._on_enqueued()  # the next request leaves while this answer is applied
            results = await asyncio.to_thread(self._deliver, message, content, recipients, verified)
        self._on_enqueued()
        return results

    def _ask_ahead(self, content: bytes) -> tuple[ReplicationMessage | None, bool]:
        replicator = self._replicator
        try:
            verified = replicator.verify(content)
        except ReplicationRejected:
            return None, False  # `receive` records why
        with replicator.directory.store.write() as conn:
            return verified, replicator.ask_ahead(conn, verified)

    def _deliver(
        self,
        message: QueuedMessage,
        content: bytes,
        recipients: Sequence[tuple[QueuedRecipient, Route]],
        verified: ReplicationMessage | None,
    ) -> list[RecipientResult]:
        replicator = self._replicator
        now = replicator.clock.now()
        with replicator.directory.store.write() as conn:
            outcome = replicator.receive(
                conn, content, queue_id=message.queue_id, verified=verified
            )
            text = f"replication {outcome.outcome}: {outcome.detail}"
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
            self._queue_record(conn, message, content, [r for r, _ in recipients], results)
        return results
