"""The durable spool: a message is committed to disk before anyone is told "250".

One job: `await spool.enqueue(message)` returns a queue id only after the message and its
recipients are committed (SQLite WAL with synchronous=FULL: fsynced). Concurrent sessions share
commits (group commit): the store's `GroupWriter` takes every write waiting at that moment, new
messages and the queue's delivery records alike, into one transaction, so N sessions pay for
one fsync, and durability does not cap throughput. If the commit fails, every waiter gets the
exception (the SMTP session answers 451) and nothing is half-written: the transaction is all
or nothing.

With a `Handoff` (the queue manager), new messages skip the wait for a queue pass:
- a message whose every recipient is local is delivered in the very transaction that accepts
  it (`Handoff.deliver_in`, under a savepoint: if delivery fails, the message is still
  accepted, only queued), so it is in the mailbox with the one commit, before the 250;
- any other goes to the manager in memory once committed (`hand_off`): its delivery starts
  without a database poll or a thread hop. This is only a faster wake-up: the message is
  durable, and one the manager declines (or a restart forgets) is found by a later pass.
Each id is claimed before its commit, so a pass that sees the committed row never starts it
a second time.

A message resent by a sibling site (same proven origin and recipient: queue.dedupe) is
recognised in the transaction that would store it: it is not stored again, and its waiter
gets the queue id of the first copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection

from sitemail.core.clock import Clock
from sitemail.queue.content import Content
from sitemail.queue.dedupe import forget_older, remember, screen
from sitemail.queue.model import QueuedMessage, QueuedRecipient, QueueId
from sitemail.queue.records import NewMessage, insert_messages, new_queue_id, stored_content
from sitemail.store.engine import Store
from sitemail.store.writer import GroupWriter

__all__ = ["Handoff", "New", "Spool", "hand_over"]

log = logging.getLogger("sitemail.queue")

_PURGE_EVERY = 30.0  # seconds between purges of old dedupe records (queue.dedupe)
_STOP_TIMEOUT = 10.0  # seconds `stop` waits for the batches being committed
New = tuple[QueuedMessage, Content, list[QueuedRecipient]]  # a message just written, with content


class Handoff(Protocol):
    """Who takes new messages at once (the queue manager)."""

    def claim(self, queue_id: QueueId) -> None:
        """Before the commit: no pass over the database may start this message."""

    def unclaim(self, queue_id: QueueId, *, wake: bool = True) -> None:
        """No hand-off follows (the commit failed, the server stops, or `deliver_in` settled
        it); `wake`: a pass has something to look at."""

    def deliver_in(self, conn: Connection, batch: Sequence[New]) -> dict[str, bool]:
        """In the accepting transaction (the writer's thread): deliver what it can right there;
        {queue id: whether a pass has work left from it} for each message it settled."""

    def hand_off(
        self, message: QueuedMessage, content: Content, recipients: Sequence[QueuedRecipient]
    ) -> None:
        """Committed, on the loop: deliver it now (or drop the claim and leave it to a pass)."""


def hand_over(handoff: Handoff, written: Sequence[New], settled: dict[str, bool]) -> list[QueueId]:
    """After the commit of `written` (each id claimed before it): start each message's
    delivery, or drop the claim of one `deliver_in` settled. Returns the ids whose hand-off
    failed (still claimed: the caller unclaims them, and a pass delivers them)."""
    failed: list[QueueId] = []
    for message, content, recipients in written:
        try:
            if message.queue_id in settled:  # delivered with its acceptance
                handoff.unclaim(message.queue_id, wake=settled[message.queue_id])
            else:
                handoff.hand_off(message, content, recipients)
        except Exception:  # it is committed: whoever waits must still hear so; a pass delivers it
            log.exception("hand-off of %s failed; left to the next queue pass", message.queue_id)
            failed.append(message.queue_id)
    return failed


@dataclass(slots=True)
class _Pending:
    message: NewMessage
    queue_id: QueueId
    future: asyncio.Future[QueueId]


@dataclass(slots=True)
class _Batch:
    items: list[_Pending]
    taken: bool = False  # the writer has started on it: join the next one


class Spool:
    """Writer of new messages into the queue, through a shared group-committing writer."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        site: str,
        on_enqueued: Callable[[], None] | None = None,
        *,
        writer: GroupWriter | None = None,
        handoff: Handoff | None = None,
        dedupe_retention: float = 2 * 48 * 3600.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._site = site
        self._on_enqueued = on_enqueued
        self._handoff = handoff
        self._own_writer = writer is None
        self.writer = writer or GroupWriter(store)
        self._lock = threading.Lock()  # the open batch is closed by the writer thread
        self._open: _Batch | None = None
        self._submitting: set[asyncio.Task[None]] = set()
        self._retention = dedupe_retention
        self._purge_at = 0.0  # when the next transaction purges old dedupe records

    @property
    def commits(self) -> int:
        """For benchmarks: transactions committed by the writer (jobs / commits = batch size)."""
        return self.writer.commits

    async def start(self) -> None:
        await self.writer.start()

    async def stop(self, within: float = _STOP_TIMEOUT) -> None:
        """Let the batches being written finish (up to `within` seconds: each session that waits
        must hear whether its message is on disk), then give up on what is left."""
        tasks = list(self._submitting)  # a task leaves the set as it ends: iterate a copy
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=within)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        batch, self._open = self._open, None
        for pending in batch.items if batch is not None else []:
            if not pending.future.done():
                self._unclaim(pending)
                pending.future.set_exception(ConnectionAbortedError("server shutting down"))
        if self._own_writer:
            await self.writer.stop()

    async def enqueue(self, message: NewMessage) -> QueueId:
        """Durably queue `message`; returns its queue id once it is on disk.

        Messages join the open batch: one writer job that takes, when the writer thread runs
        it, every message that joined until then (three statements for all of them). So a
        message never waits for an earlier batch's commit before its own can start.
        """
        future: asyncio.Future[QueueId] = asyncio.get_running_loop().create_future()
        pending = _Pending(message, message.queue_id or new_queue_id(self._clock.now()), future)
        if self._handoff is not None:
            self._handoff.claim(pending.queue_id)
        batch = self._open
        with self._lock:
            joined = batch is not None and not batch.taken
            if joined and batch is not None:
                batch.items.append(pending)
        if not joined:
            batch = self._open = _Batch([pending])
            task = asyncio.create_task(self._submit(batch), name="spool-batch")
            self._submitting.add(task)
            task.add_done_callback(self._submitting.discard)
        queue_id = await future
        if self._on_enqueued is not None and self._handoff is None:
            self._on_enqueued()
        return queue_id

    async def _submit(self, batch: _Batch) -> None:
        handed = False
        try:
            written, settled, duplicates = await self.writer.submit(
                functools.partial(self._insert, batch=batch)
            )
        except Exception as exc:  # every waiter gets it (451); nothing was written
            for pending in batch.items:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        else:
            self._hand_off(batch, written, settled)
            handed = True
            self._drop_duplicates(batch, duplicates)
        finally:
            if self._open is batch:
                self._open = None
            if not handed:  # failed or cancelled: a pass decides what became of them
                for pending in batch.items:
                    self._unclaim(pending)
        for pending in batch.items:
            if not pending.future.done():
                pending.future.set_result(pending.queue_id)

    def _hand_off(self, batch: _Batch, written: list[New], settled: dict[str, bool]) -> None:
        if self._handoff is None:
            return
        failed = set(hand_over(self._handoff, written, settled))
        for pending in batch.items:
            if pending.queue_id in failed:
                self._unclaim(pending)

    def _drop_duplicates(self, batch: _Batch, duplicates: dict[QueueId, QueueId]) -> None:
        """Messages not stored (resends): nothing to hand off; their waiters get the id of
        the first copy."""
        for pending in batch.items:
            if pending.queue_id in duplicates:
                if self._handoff is not None:
                    self._handoff.unclaim(pending.queue_id, wake=False)
                pending.queue_id = duplicates[pending.queue_id]

    def _unclaim(self, pending: _Pending) -> None:
        if self._handoff is not None:
            self._handoff.unclaim(pending.queue_id)

    def _insert(
        self, conn: Connection, *, batch: _Batch
    ) -> tuple[list[New], dict[str, bool], dict[QueueId, QueueId]]:
        """In the writer thread: close the batch (later messages open the next), write it
        but for resends from sibling sites, and let the hand-off deliver what it can in the
        same transaction. (What was handed on, what the hand-off settled, the resends.) A big
        message is copied in chunks from its spool file; what is handed on reads it from the
        queue (the spool file is closed once the session has its answer)."""
        with self._lock:
            batch.taken = True
        now = self._clock.now()
        screened = screen(
            conn, [(p.queue_id, p.message) for p in batch.items], now=now, site=self._site
        )
        queued = insert_messages(conn, screened.fresh, now, self._site)
        remember(conn, screened.fresh, now)
        if now >= self._purge_at:
            self._purge_at = now + _PURGE_EVERY
            forget_older(conn, now - self._retention)
        if self._handoff is None:
            return [], {}, screened.duplicates
        new = [
            (message, stored_content(self._store, queue_id, fresh.content), recipients)
            for (queue_id, fresh), (message, recipients) in zip(screened.fresh, queued, strict=True)
        ]
        return new, self._handoff.deliver_in(conn, new), screened.duplicates
