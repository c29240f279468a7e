"""The durable spool: a message is committed to disk before anyone is told "250".

One job: `await spool.enqueue(message)` returns a queue id only after the message and its
recipients are committed (SQLite WAL with synchronous=FULL: fsynced). Concurrent sessions share
commits (group commit): one writer thread takes every message waiting at that moment into one
transaction, so N sessions pay for one fsync, and durability does not cap throughput.
If the commit fails, every waiter gets the exception (the SMTP session answers 451) and
nothing is half-written: the transaction is all or nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from sitemail.core.clock import Clock
from sitemail.queue.model import QueueId
from sitemail.queue.records import NewMessage, insert_message, new_queue_id
from sitemail.store.engine import Store

__all__ = ["Spool"]

_MAX_BATCH = 256


@dataclass(slots=True)
class _Pending:
    message: NewMessage
    future: asyncio.Future[QueueId]


class Spool:
    """Group-committing writer of new messages into the queue."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        site: str,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._site = site
        self._on_enqueued = on_enqueued
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0  # for benchmarks: messages / commits = mean batch size

    async def start(self) -> None:
        self._task = asyncio.create_task(self._writer(), name="spool-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for pending in self._pending:
            if not pending.future.done():
                pending.future.set_exception(ConnectionAbortedError("server shutting down"))
        self._pending.clear()

    async def enqueue(self, message: NewMessage) -> QueueId:
        """Durably queue `message`; returns its queue id once it is on disk."""
        if self._task is None:
            return await asyncio.to_thread(self._commit_one, message)
        future: asyncio.Future[QueueId] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(message, future))
        self._wake.set()
        return await future

    def _commit_one(self, message: NewMessage) -> QueueId:
        return self._commit([message])[0]

    def _commit(self, batch: list[NewMessage]) -> list[QueueId]:
        now = self._clock.now()
        ids = [m.queue_id or new_queue_id(now) for m in batch]
        with self._store.write() as conn:
            for queue_id, message in zip(ids, batch, strict=True):
                insert_message(conn, queue_id, message, now, self._site)
        self.commits += 1
        return ids

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
                try:
                    ids = await asyncio.to_thread(self._commit, [p.message for p in batch])
                except Exception as exc:
                    for pending in batch:
                        if not pending.future.done():
                            pending.future.set_exception(exc)
                    continue
                for pending, queue_id in zip(batch, ids, strict=True):
                    if not pending.future.done():
                        pending.future.set_result(queue_id)
                if self._on_enqueued is not None:
                    self._on_enqueued()
