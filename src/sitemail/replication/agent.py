"""The `replication` transport: what the queue calls for mail to our directory-service mailbox.

One job: hand each message to the `Replicator` and record the recipient as delivered (and the
message as dequeued) in the same transaction as everything the message caused (objects
applied, answer or next request queued), then wake the queue for what was queued. A rejected
message is delivered too (it is consumed, logged and counted, never bounced): a forged message
must not make us send mail. Writes go through the server's group writer (`submit`), like every
queue write, so they share its transactions instead of competing for SQLite's lock.

Messages are verified concurrently, then taken one at a time. An answer of a window that
overtook the one before it waits for its turn (Replicator.in_turn) before it is taken, woken
by each message taken after it; after TURN_WAIT it is taken anyway (its predecessor is lost:
the replicator's gap handling asks again).
"""

from __future__ import annotations

import asyncio
import contextlib
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

TURN_WAIT = 30.0  # seconds an answer waits for the one before it

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
        self._taken = asyncio.Condition()  # notified after each message taken

    async def deliver(
        self,
        message: QueuedMessage,
        content: bytes,
        recipients: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        replicator = self._replicator
        verified = await asyncio.to_thread(self._verify, content)
        if verified is not None:
            async with self._serial:
                # Ask for the next batch first, in its own commit, so the peer composes it
                # while this one is applied (see Replicator.ask_ahead).
                asked = await self._submit(lambda conn: replicator.ask_ahead(conn, verified))
            if asked:
                self._on_enqueued()
            await self._wait_for_turn(verified)
        async with self._serial:
            results: list[RecipientResult] = await self._submit(
                lambda conn: self._receive(conn, message, content, recipients, verified)
            )
        async with self._taken:
            self._taken.notify_all()
        self._on_enqueued()
        return results

    async def _wait_for_turn(self, verified: ReplicationMessage) -> None:
        """Until the message may be taken (in_turn), or TURN_WAIT has passed. The check runs
        under the condition's lock, so a message taken meanwhile cannot go unnoticed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TURN_WAIT
        async with self._taken:
            while not await asyncio.to_thread(self._replicator.in_turn, verified):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    log.warning(
                        "replication answer #%d from %s taken out of turn: the one before it "
                        "did not come",
                        verified.seq,
                        verified.origin,
                    )
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._taken.wait()

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
