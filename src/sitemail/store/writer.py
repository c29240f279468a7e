"""Group commit for the whole server: many small write jobs, one transaction, one fsync.

One job: `await writer.submit(job)` runs `job(conn)` inside a write transaction on the writer's
one thread, and returns the job's result only after that transaction has committed (SQLite with
`synchronous=FULL`: fsynced). Every job waiting when the thread comes free joins the same
transaction, so N callers (SMTP sessions queueing messages, the queue recording deliveries)
pay for one commit, and since one thread does every write, writers never sleep in SQLite's
busy handler waiting for each other's lock.

Invariants:
- A job's effects count only if `submit` returned: a job that raised is rolled back, and a
  commit that failed fails every job of that transaction (each caller sees the exception).
- One bad job fails alone: when a job raises, the transaction is rolled back and the others
  run again without it (so a job must be a pure database function: it may run more than once,
  and only its last run counts). Unless it raised `StoreUnavailableError` (disk full, I/O
  error, locked): that is no job's fault, and the whole batch fails with it.
- Without `start()` (tests, admin commands) each `submit` is its own transaction on a worker
  thread, with the same guarantees.

Lazy jobs (`submit(job, lazy=True)`: writes nobody is waiting on, such as the record of a
message already handed to the next hop) wait up to `linger` seconds for a job that someone
is waiting on, to share its commit instead of taking the thread just before it arrives: at
light load that is the next message's acceptance, which would otherwise wait for a commit of
its own behind the record. A lazy job alone is committed once its linger is over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection

from sitemail.core.errors import StoreUnavailableError
from sitemail.store.engine import Store

__all__ = ["GroupWriter"]

T = TypeVar("T")
_MAX_BATCH = 256
_LINGER = 0.005  # seconds a lazy job waits for company (about one SMTP transaction on loopback)
_STOP_TIMEOUT = 10.0  # seconds `stop` waits for submitted jobs to commit


@dataclass(slots=True)
class _Job:
    run: Callable[[Connection], Any]
    future: asyncio.Future[Any]
    lazy: bool = False
    since: float = 0.0  # loop time of submission
    result: Any = None
    error: BaseException | None = None
    committed: bool = False  # set by the writer thread once the job's transaction commits


class GroupWriter:
    """Runs write jobs on one thread, as many per transaction as are waiting."""

    def __init__(
        self, store: Store, *, max_batch: int = _MAX_BATCH, linger: float = _LINGER
    ) -> None:
        self._store = store
        self._max_batch = max_batch
        self._linger = linger
        self._pending: list[_Job] = []
        self._inflight: list[_Job] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self.commits = 0  # for benchmarks: jobs / commits = mean batch size
        self.jobs = 0

    @property
    def running(self) -> bool:
        return self._task is not None

    async def start(self) -> None:
        if self._task is not None:
            return
        self._wake = asyncio.Event()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sitemail-writer")
        self._task = asyncio.create_task(self._writer(), name="store-writer")

    async def stop(self, within: float = _STOP_TIMEOUT) -> None:
        """Commit every job already submitted (waiting up to `within` seconds), then stop.

        A job whose transaction was running when the wait ended is told its true result once
        the thread is done with it (it may have committed: its caller must not hear "not
        written"); only jobs that never ran fail, with `ConnectionAbortedError`."""
        if self._task is not None:
            # FIFO: once a last job has committed, every job submitted before it has run.
            with contextlib.suppress(Exception):  # the timeout, or that commit failed
                async with asyncio.timeout(within):
                    await self.submit(_nothing)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.shutdown, wait=True)
        for job in [*self._inflight, *self._pending]:
            if job.committed or job.error is not None:  # the thread finished its transaction
                _settle(job)
            elif not job.future.done():  # never run (or cancelled before it ran): not written
                job.future.set_exception(ConnectionAbortedError("server shutting down"))
        self._pending.clear()
        self._inflight = []

    async def submit(self, job: Callable[[Connection], T], *, lazy: bool = False) -> T:
        """Run `job(conn)` in a write transaction; its result once that is committed.
        `lazy`: it may wait up to `linger` for company (see the module docstring)."""
        if self._task is None or self._wake is None:
            return await asyncio.to_thread(self._run_alone, job)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Job(job, future, lazy, loop.time()))
        self._wake.set()
        return await future

    def _run_alone(self, job: Callable[[Connection], T]) -> T:
        with self._store.write() as conn:
            result = job(conn)
        self.commits += 1
        self.jobs += 1
        return result

    def _run_batch(self, batch: list[_Job]) -> None:
        """Commit the batch, leaving out (with their error) the jobs that raise."""
        todo = batch
        while todo:
            failed: _Job | None = None
            try:
                with self._store.write() as conn:
                    for job in todo:
                        try:
                            job.result = job.run(conn)
                        except Exception:
                            failed = job
                            raise
            except Exception as exc:
                # BEGIN or COMMIT failed, or the database is unavailable (disk full, I/O
                # error, locked): nothing of the batch is written, and no job is to blame,
                # so running the others again would only fail them one by one.
                if failed is None or isinstance(exc, StoreUnavailableError):
                    for job in todo:
                        job.error = exc
                    return
                failed.error = exc  # as Store.write reports it (a StoreError for SQL errors)
                todo = [job for job in todo if job is not failed]
                continue
            for job in todo:
                job.committed = True
            self.commits += 1
            self.jobs += len(todo)
            return

    async def _linger_while_lazy(self) -> None:
        """While only lazy jobs wait, wait for another job, up to `linger` after the oldest."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while self._pending and all(job.lazy for job in self._pending):
            remaining = self._pending[0].since + self._linger - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
            self._wake.clear()

    async def _writer(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._linger_while_lazy()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                self._inflight = batch
                try:
                    await loop.run_in_executor(self._thread, self._run_batch, batch)
                except Exception as exc:  # the executor itself failed
                    for job in batch:
                        job.error = job.error or exc
                self._inflight = []
                for job in batch:
                    _settle(job)


def _settle(job: _Job) -> None:
    """Tell the job's caller how its transaction ended."""
    if job.future.done():
        return
    if job.error is not None:
        job.future.set_exception(job.error)
    else:
        job.future.set_result(job.result)


def _nothing(conn: Connection) -> None:
    """The last job of a flush: it commits after every job submitted before it."""
    del conn
