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
import threading
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
    ) -> None:
        self._store = store
        self._clock = clock
        self._site = site
        self._on_enqueued = on_enqueued
        self._own_writer = writer is None
        self.writer = writer or GroupWriter(store)
        self._lock = threading.Lock()  # the open batch is closed by the writer thread
        self._open: _Batch | None = None
        self._submitting: set[asyncio.Task[None]] = set()

    @property
    def commits(self) -> int:
        """For benchmarks: transactions committed by the writer (jobs / commits = batch size)."""
        return self.writer.commits

    async def start(self) -> None:
        await self.writer.start()

    async def stop(self) -> None:
        tasks, self._submitting = self._submitting, set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        batch, self._open = self._open, None
        for pending in batch.items if batch is not None else []:
            if not pending.future.done():
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
        pending = _Pending(message, future)
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
        if self._on_enqueued is not None:
            self._on_enqueued()
        return queue_id

    async def _submit(self, batch: _Batch) -> None:
        try:
            ids = await self.writer.submit(functools.partial(self._insert, batch=batch))
        except Exception as exc:  # every waiter gets it (451); nothing was written
            for pending in batch.items:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        finally:
            if self._open is batch:
                self._open = None
        for pending, queue_id in zip(batch.items, ids, strict=True):
            if not pending.future.done():
                pending.future.set_result(queue_id)

    def _insert(self, conn: Connection, *, batch: _Batch) -> list[QueueId]:
        """In the writer thread: close the batch (later messages open the next) and write it."""
        with self._lock:
            batch.taken = True
        now = self._clock.now()
        ids = [p.message.queue_id or new_queue_id(now) for p in batch.items]
        insert_messages(
            conn, [(i, p.message) for i, p in zip(ids, batch.items, strict=True)], now, self._site
        )
        return ids
