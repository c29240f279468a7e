"""The durable spool: a message is committed to disk before anyone is told "250".

One job: `await spool.enqueue(message)` returns a queue id only after the message and its
recipients are committed (SQLite WAL with synchronous=FULL: fsynced). Concurrent sessions share
commits (group commit): the store's `GroupWriter` takes every write waiting at that moment, new
messages and the queue's delivery records alike, into one transaction, so N sessions pay for
one fsync, and durability does not cap throughput. If the commit fails, every waiter gets the
exception (the SMTP session answers 451) and nothing is half-written: the transaction is all
or nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from sitemail.core.clock import Clock
from sitemail.queue.model import QueueId
from sitemail.queue.records import NewMessage, insert_messages, new_queue_id
from sitemail.store.engine import Store
from sitemail.store.writer import GroupWriter

__all__ = ["Spool"]


@dataclass(slots=True)
class _Pending:
    message: NewMessage
    future: asyncio.Future[QueueId]


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
    ) -> None:
        self._store = store
        self._clock = clock
        self._site = site
        self._on_enqueued = on_enqueued
        self._own_writer = writer is None
        self.writer = writer or GroupWriter(store)
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def commits(self) -> int:
        """For benchmarks: transactions committed by the writer (jobs / commits = batch size)."""
        return self.writer.commits

    async def start(self) -> None:
        await self.writer.start()

    async def stop(self) -> None:
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        for pending in self._pending:
            if not pending.future.done():
                pending.future.set_exception(ConnectionAbortedError("server shutting down"))
        self._pending.clear()
        if self._own_writer:
            await self.writer.stop()

    async def enqueue(self, message: NewMessage) -> QueueId:
        """Durably queue `message`; returns its queue id once it is on disk."""
        future: asyncio.Future[QueueId] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(message, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="spool-flush")
        queue_id = await future
        if self._on_enqueued is not None:
            self._on_enqueued()
        return queue_id

    async def _flush(self) -> None:
        """Hand every waiting message to the writer as one job (three statements for all),
        and again for those that arrived meanwhile, until none waits."""
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    ids = await self.writer.submit(functools.partial(self._insert, batch=batch))
                except Exception as exc:  # every waiter gets it (451); nothing was written
                    for pending in batch:
                        if not pending.future.done():
                            pending.future.set_exception(exc)
                    continue
                for pending, queue_id in zip(batch, ids, strict=True):
                    if not pending.future.done():
                        pending.future.set_result(queue_id)
        finally:
            self._flusher = None

    def _insert(self, conn: Connection, *, batch: list[_Pending]) -> list[QueueId]:
        now = self._clock.now()
        ids = [p.message.queue_id or new_queue_id(now) for p in batch]
        insert_messages(
            conn, [(i, p.message) for i, p in zip(ids, batch, strict=True)], now, self._site
        )
        return ids
