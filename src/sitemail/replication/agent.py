"""The `replication` transport: what the queue calls for mail to our directory-service mailbox.

One job: hand each message to the `Replicator` and record the recipient as delivered (and the
message as dequeued) in the same transaction as everything the message caused (objects
applied, answer or next request queued). What it queued goes to the queue manager in memory
once committed, as the spool hands over new mail (each id claimed before the commit, so no
pass starts it twice): the answer or request is on its way without waiting for a pass, which
costs a database poll and a thread hop per message, a few milliseconds at each end of every
round of a full pull. Without a manager to hand to, the queue is woken instead. A rejected
message is delivered too (it is consumed, logged and counted, never bounced): a forged message
must not make us send mail. So is a message whose processing fails on anything but the store
(`TRANSIENT`): retrying it would fail again until it expired; it is dropped and counted as
`unprocessable` instead, in a transaction of its own. Writes go through the server's group
writer (`submit`), like every queue write, so they share its transactions instead of competing
for SQLite's lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection

from sitemail.core.events import ReplicationApplied, ReplicationSent, emit
from sitemail.queue.content import Content
from sitemail.queue.model import QueuedMessage, QueuedRecipient, RecipientResult
from sitemail.queue.records import close_if_done, new_queue_id, record_delivered
from sitemail.queue.spool import Handoff, hand_over
from sitemail.replication.apply import Checked
from sitemail.replication.codec import MessageType, ReplicationMessage, ReplicationRejected
from sitemail.replication.connectors import Connector
from sitemail.replication.replicator import TRANSIENT, Outbox, Received, Replicator
from sitemail.routing.route import Route

__all__ = ["ReplicationAgent", "Submit"]

log = logging.getLogger("sitemail.replication")

Submit = Callable[[Callable[[Connection], Any]], Awaitable[Any]]
_T = TypeVar("_T")
_CLAIMS = 2  # queue ids claimed per step: a step queues one message (answer, request, pong)
# Asking ahead is for an answer with at most this many messages taken up (itself included):
# with one answer being applied, the next one asks for a third. Beyond, the answer asks when
# it is applied (Replicator._take_answer), so no more than a few answers wait here at once.
_ASK_AHEAD = 2


class ReplicationAgent:
    def __init__(
        self,
        replicator: Replicator,
        *,
        on_enqueued: Callable[[], None],
        submit: Submit,
        handoff: Handoff | None = None,
    ) -> None:
        self._replicator = replicator
        self._on_enqueued = on_enqueued
        self._submit = submit
        self.handoff = handoff  # the queue manager (set once it exists: it holds this agent)
        # The directory-service mailbox is processed one message at a time, in arrival order
        # (Exchange's DS does the same): answers build on each other's watermarks.
        self._serial = asyncio.Lock()
        self._taken = 0  # messages taken up and not yet processed (bounds asking ahead)
        self._outcomes: dict[str, Received] = {}  # the last run's, told once committed

    async def deliver(
        self,
        message: QueuedMessage,
        message_content: Content,
        recipients: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        self._taken += 1
        try:
            # Replication messages are read whole (a big one from the queue, in a thread);
            # a failed read is no fault of the message: the queue defers it.
            content = (
                message_content.whole()
                if message_content.in_memory
                else await asyncio.to_thread(message_content.whole)
            )
            try:
                return await self._deliver(message, content, recipients)
            except TRANSIENT:
                raise  # the store or the machine failed, not the message: deferred, retried
            except Exception as fault:  # the message made processing fail: dropped, counted
                drop = partial(self._drop, message=message, content=content, fault=fault)
                return await self._step(partial(drop, recipients=recipients))
        finally:
            self._taken -= 1

    async def _deliver(
        self,
        message: QueuedMessage,
        content: bytes,
        recipients: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        connectors, verified = await asyncio.to_thread(self._verify, content)
        checked = None
        if verified is not None and verified.type is MessageType.ANSWER:
            checked = await self._ask_ahead(verified, connectors)
        async with self._serial:
            results: list[RecipientResult] = await self._step(
                lambda conn: self._receive(
                    conn,
                    message,
                    content,
                    recipients,
                    verified=verified,
                    connectors=connectors,
                    checked=checked,
                    source=message.envelope.client_address,
                )
            )
        outcome = self._outcomes.pop(message.queue_id, None)
        if outcome is not None and outcome.outcome != "rejected":  # the replicator warns of those
            emit(
                ReplicationApplied(
                    outcome.origin, outcome.outcome, message.queue_id, outcome.detail
                )
            )
        return results

    async def _ask_ahead(
        self, verified: ReplicationMessage, connectors: dict[str, Connector]
    ) -> Checked | None:
        """For an answer: ask for the next batch (if there is more) first, in its own commit,
        and before waiting for the answers taken up earlier to be applied, so the peer
        composes it while they and this one are applied (see Replicator.ask_ahead).
        Meanwhile the answer's objects are checked, and their rows made ready, in a thread,
        off the store's writer, which applies them; returns them."""
        replicator = self._replicator
        checking = asyncio.create_task(asyncio.to_thread(replicator.wire_objects, verified))
        try:
            if verified.body.get("more") is True and self._taken <= _ASK_AHEAD:
                await self._step(lambda conn: replicator.ask_ahead(conn, verified, connectors))
        finally:
            checked = await checking
        return checked

    async def _step(self, work: Callable[[Connection], _T]) -> _T:
        """Run `work` as one writer job and start the mail it queued once it has committed."""
        handoff = self.handoff
        if handoff is None:
            result: _T = await self._submit(work)
            self._on_enqueued()
            return result
        now = self._replicator.clock.now()
        claimed = [new_queue_id(now) for _ in range(_CLAIMS)]
        for queue_id in claimed:
            handoff.claim(queue_id)
        outbox = Outbox(list(claimed))

        def job(conn: Connection) -> tuple[_T, dict[str, bool]]:
            done = self._replicator.collecting(outbox, lambda: work(conn))
            return done, handoff.deliver_in(conn, outbox.written)

        try:
            result, settled = await self._submit(job)
        except BaseException:
            for queue_id in claimed:  # rolled back (or not known): a pass looks
                handoff.unclaim(queue_id)
            raise
        for peer, kind, seq in outbox.sent:
            emit(ReplicationSent(peer, kind, seq))
        failed = set(hand_over(handoff, outbox.written, settled))
        try:
            self._replicator.start_prefetches()  # the answer is on its way: read ahead
        except Exception:  # only a speed-up: the committed step stands
            log.exception("replication read-ahead could not start")
        started = {m.queue_id for m, _, _ in outbox.written} - failed
        for queue_id in claimed:
            if queue_id not in started:
                handoff.unclaim(queue_id, wake=queue_id in failed)
        if outbox.overflow:
            self._on_enqueued()
        return result

    def _verify(self, content: bytes) -> tuple[dict[str, Connector], ReplicationMessage | None]:
        """In a thread: our connectors and the verified message (None: `receive` records
        why it was refused)."""
        connectors = self._replicator.connectors()
        try:
            return connectors, self._replicator.verify(content, connectors)
        except ReplicationRejected:
            return connectors, None

    def _receive(
        self,
        conn: Connection,
        message: QueuedMessage,
        content: bytes,
        recipients: Sequence[tuple[QueuedRecipient, Route]],
        *,
        verified: ReplicationMessage | None,
        connectors: dict[str, Connector],
        checked: Checked | None,
        source: str,
    ) -> list[RecipientResult]:
        outcome = self._replicator.receive(
            conn,
            content,
            queue_id=message.queue_id,
            verified=verified,
            connectors=connectors,
            checked=checked,
            source=source,
        )
        return self._consumed(conn, message, recipients, outcome)

    def _drop(
        self,
        conn: Connection,
        *,
        message: QueuedMessage,
        content: bytes,
        recipients: Sequence[tuple[QueuedRecipient, Route]],
        fault: Exception,
    ) -> list[RecipientResult]:
        outcome = self._replicator.drop(conn, content, message.queue_id, fault)
        return self._consumed(conn, message, recipients, outcome)

    def _consumed(
        self,
        conn: Connection,
        message: QueuedMessage,
        recipients: Sequence[tuple[QueuedRecipient, Route]],
        outcome: Received,
    ) -> list[RecipientResult]:
        """Record the recipients delivered and the message dequeued, in the caller's commit."""
        replicator = self._replicator
        now = replicator.clock.now()
        text = f"replication {outcome.outcome}: {outcome.detail}"
        self._outcomes[message.queue_id] = outcome
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
