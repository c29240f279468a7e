"""The queue manager: picks due recipients, routes them, hands them to transports, records.

One job: move every queued recipient to a final state. Each pass takes the messages with a
recipient due now, routes each recipient (`router(address, trace) -> Route`, trace = the
sites the message passed, from its X-Sitemail-Trace fields), groups recipients of one
message by (transport, next hop) so one transaction carries them, calls the registered
transport, and records each result together with the DSN it calls for, in one transaction:
- delivered: final; a SUCCESS DSN if the sender asked for one;
- failed (5xx, routing reject, hop limit): final; a FAILURE DSN (never for a DSN or for <>);
- deferred (4xx, network): retried after `retry_initial * 2**(attempts-1)` capped at
  `retry_max`; a DELAY DSN once after `delay_notice`; failed with 4.4.7 at `expiry`.
Messages whose due recipients all go to transactional transports (local delivery) are
delivered, recorded and dequeued together, a whole pass in one job of the shared
`GroupWriter` (one commit, shared with the spool's new messages); if that job fails, each of
its messages is tried alone, so one bad message holds no other up. The others go to their
network transports (at most `_PARALLEL_MESSAGES` at once) and their results are recorded
through the same writer, each next hop's acceptances as soon as it has answered (not lazily,
not after the message's other hops), and noted in the delivery journal (queue.journal) the
moment it arrives, so a crash almost never finds a delivery unrecorded: at start, what the
journal holds is recorded before anything is sent (and the next site recognises the resend
of a delivery that was lost all the same: queue.dedupe). Time comes from the injected clock, so tests step through 48 hours
in milliseconds.

New mail does not wait for a pass: the spool hands each committed message over in memory
(`claim` before its commit, `hand_off` after; spool.Handoff), and it starts at once. The
database stays the truth: a pass still finds whatever was not handed over (a declined hand-off,
DSNs, replication, everything after a restart). No message is started twice: claimed and
in-flight ids are skipped, and so is any message that finished while a pass was reading (its
snapshot may predate the finishing commit). A finished delivery wakes the loop only when it
left something for a pass (a deferral, a notice, an expansion, a full house).

A failing store (disk full, I/O error, database locked) never causes a resend: the results a
transport obtained are kept in memory and their record is retried after a back-off
(queue/backoff.py) until it is written, the message staying in flight all along, so no pass
hands it to a transport again. While writes fail, nothing new starts before the back-off is
over (local mail, which commits with its delivery, simply waits), and the failure is logged
once a minute. `attempts` (queue/attempts.py) tells `queue list` what each delivery in
flight is doing.

A deferral keeps its next hop; a delivery that succeeds at a next hop makes the mail deferred
there due at once (`_flush`, Postfix's flush of a destination that answers again). What each
result was is told as catalogued events (core/events.py: logs, metrics) once its record has
committed, never from inside a job the writer may run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection

from sitemail.config.model import QueueConfig
from sitemail.core.clock import Clock
from sitemail.core.envelope import Envelope, EnvelopeRecipient, Notify
from sitemail.core.errors import StoreUnavailableError
from sitemail.core.events import (
    Event,
    QueueBounced,
    QueueDeferred,
    QueueDelivered,
    QueueDsn,
    QueueExpired,
    QueueFlushed,
    QueueRelayed,
    emit,
)
from sitemail.queue import claims
from sitemail.queue.attempts import Attempts, report_stage
from sitemail.queue.backoff import Backoff
from sitemail.queue.content import Content
from sitemail.queue.dsn import DsnEntry, DsnKind, build_dsn, dsn_body_type
from sitemail.queue.journal import DeliveryJournal
from sitemail.queue.model import (
    Delivery,
    DeliveryAgent,
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    RcptState,
    RecipientResult,
    TransactionalAgent,
)
from sitemail.queue.records import (
    NewMessage,
    TrackEvent,
    close_done,
    close_finished,
    close_if_done,
    defer_recipient,
    deferred_hops,
    due_queue_ids,
    finish_recipient,
    flush_hop,
    insert_message,
    load_messages,
    mark_delay_notified,
    new_queue_id,
    next_due_at,
    track,
)
from sitemail.routing.route import Route, Transport
from sitemail.routing.trace import read_trace
from sitemail.store.engine import Store, is_conflict
from sitemail.store.writer import GroupWriter

__all__ = ["QueueManager", "count_received_headers"]

log = logging.getLogger("sitemail.queue")

T = TypeVar("T")
Recording = Callable[[Connection, list[Event]], T]  # a record job: writes, and says what it did

_RECEIVED = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)
_BATCH = 100
_PARALLEL_MESSAGES = 32  # messages handed to network transports at once
_MAX_IN_FLIGHT = 4 * _PARALLEL_MESSAGES  # messages loaded and waiting for a delivery slot
_PASS_BYTES = 32 * 1024 * 1024  # message content in memory for one pass (at least one message;
# a big message counts for its head: the rest is read in chunks when it is sent)
_IDLE_POLL = 5.0
_IN_FLIGHT_POLL = 0.25  # seconds between passes while everything due is in flight


def count_received_headers(content: bytes) -> int:
    return len(_RECEIVED.findall(content.split(b"\r\n\r\n", 1)[0]))


@dataclass(frozen=True, slots=True)
class _Work:
    message: QueuedMessage
    content: Content
    due: list[QueuedRecipient]
    hops: dict[int, str] = field(default_factory=dict)  # recipient id -> its next hop (_hop)


def _hop(transport: Transport, nexthop: str) -> str:
    """A next hop as the queue names it: "site SiteB", "relay host:25", "mx example.org"."""
    return f"{transport} {nexthop}".strip()


@dataclass(slots=True)
class _Plan:
    """One message of a pass: results known before delivery, and recipients by next hop."""

    work: _Work
    results: list[RecipientResult] = field(default_factory=list)
    groups: dict[tuple[Transport, str], list[tuple[QueuedRecipient, Route]]] = field(
        default_factory=lambda: defaultdict(list)
    )


class _UnrecordedError(Exception):
    """A transport's results that could not be written: the record job, to run again."""

    def __init__(self, work: _Work, record: Recording[bool]) -> None:
        super().__init__("results not recorded")
        self.work = work
        self.record = record


def _internal_error(
    transport: Transport, exc: Exception, members: Sequence[tuple[QueuedRecipient, Route]]
) -> list[RecipientResult]:
    text = f"internal error in {transport} transport: {exc.__class__.__name__}"
    return [RecipientResult(r.id, Outcome.DEFERRED, 451, "4.3.0", text) for r, _ in members]


class QueueManager:
    """Delivers what the spool holds; one instance per server."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        site: str,
        reporting_mta: str,
        settings: QueueConfig,
        router: Callable[[str, Mapping[str, float]], Route],
        agents: Mapping[Transport, DeliveryAgent],
        writer: GroupWriter | None = None,
        backoff: Backoff | None = None,
        journal: DeliveryJournal | None = None,
        server: str = "",
    ) -> None:
        self._store = store
        # Our name in queue claims (queue.claims), "" for none: a manager built alone (tests).
        self._server = server
        self._lease = settings.claim_lease
        self._clock = clock
        self._site = site
        self._reporting_mta = reporting_mta
        self._settings = settings
        self._router = router
        self._agents = dict(agents)
        self._writer = writer or GroupWriter(store)
        self._journal = journal
        self._transactional = frozenset(
            t for t, agent in self._agents.items() if isinstance(agent, TransactionalAgent)
        )
        self._wake = asyncio.Event()
        self._running: set[str] = set()  # in flight, or claimed by the spool before its commit
        self._group: asyncio.TaskGroup | None = None  # run()'s, for hand-offs
        self._planned: dict[str, _Plan] = {}  # routed by deliver_in, for hand_off
        self._slots: asyncio.Semaphore | None = None  # run()'s: made in its loop
        # For each pass reading the database (in a thread): messages that finished meanwhile
        # (the loop's passes and run_once may read at the same time).
        self._reading: list[set[str]] = []
        self._fast_queue: list[_Plan] = []  # prepared local-only messages awaiting a batch
        self._fast_draining = False
        # After a failed write or pass: how long nothing new starts, and the rate of logging.
        self._backoff = backoff or Backoff()
        self.attempts = Attempts(clock)  # what each delivery in flight is doing (queue list)
        self._stopping = False  # stop(): start nothing more; run() returns when idle
        # Next hops with deferred recipients: a delivery there flushes them (_flush).
        self._deferred_hops: set[str] = set()
        self._accepted_events: dict[str, list[Event]] = {}  # deliver_in's, told at unclaim
        self._halt = asyncio.Event()  # stop(): the claim renewal ends

    def wake(self) -> None:
        """New mail or an admin retry: look at the queue now."""
        self._wake.set()

    def use_settings(self, settings: QueueConfig) -> None:
        """Retry, expiry, notice and hop settings read again (the server's reload): every
        decision from now on uses them, for mail already queued too."""
        self._settings = settings

    def stop(self) -> None:
        """The server stops: start no delivery any more (what waits stays queued); `run`
        returns once the deliveries in flight have finished and their results are recorded."""
        self._stopping = True
        self._wake.set()
        self._halt.set()

    def claim(self, queue_id: str) -> None:
        """The spool is committing this message and will hand it over: passes skip it."""
        self._running.add(queue_id)

    def unclaim(self, queue_id: str, *, wake: bool = True) -> None:
        """The hand-off will not come: the commit failed or the server stops (`wake`: if it
        was committed after all, a pass picks it up), or `deliver_in` settled it."""
        self._running.discard(queue_id)
        self._planned.pop(queue_id, None)
        for event in self._accepted_events.pop(queue_id, ()):
            emit(event)
        if wake:
            self._wake.set()

    def deliver_in(
        self,
        conn: Connection,
        batch: Sequence[tuple[QueuedMessage, Content, list[QueuedRecipient]]],
    ) -> dict[str, bool]:
        """In the transaction that accepts `batch` (the writer's thread): deliver, record and
        dequeue the messages whose every recipient is local, so one commit both accepts them
        and puts them in their mailboxes. A savepoint keeps a failing delivery from failing
        the acceptance: rolled back, those messages are handed off as usual. Returns, for
        each message settled here, whether it left work for a pass."""
        try:
            local: list[_Plan] = []
            for message, content, recipients in batch:
                plan = self._plan(_Work(message, content, list(recipients)))
                if self._all_transactional(plan):
                    local.append(plan)
                else:  # routed once: hand_off takes this plan (the writer's last run's)
                    self._planned[message.queue_id] = plan
            handed = [m.queue_id for m, _, _ in batch if m.queue_id in self._planned]
            if self._server:  # handed off in memory: ours before any other server sees them
                claims.claim_new(conn, handed, self._server, self._clock.now() + self._lease)
            if not local:
                return {}
            events: list[Event] = []
            with conn.begin_nested():
                closed, noticed = self._settle_in(conn, local, events)
            for plan in local:  # told once committed (unclaim), never from this transaction
                self._accepted_events[plan.work.message.queue_id] = [
                    e for e in events if getattr(e, "queue_id", "") == plan.work.message.queue_id
                ]
        except Exception as exc:  # accepted all the same; the usual path retries them
            if is_conflict(exc):  # a deadlock with another server's delivery: not a fault
                log.warning(
                    "delivery with acceptance deferred: a conflict with another server's "
                    "transaction; the messages are handed off"
                )
            else:
                log.exception("delivery with acceptance failed; handing the messages off")
            return {}
        done = set(closed)
        return {
            p.work.message.queue_id: noticed or p.work.message.queue_id not in done for p in local
        }

    def hand_off(
        self, message: QueuedMessage, content: Content, recipients: Sequence[QueuedRecipient]
    ) -> None:
        """A message just committed by the spool (claimed before): start its delivery now,
        without a database poll. Declined (a pass delivers it) before run(), when full, or
        during a back-off after failed writes."""
        group = self._group
        if group is None or self._stopping or len(self._running) > _MAX_IN_FLIGHT:
            self.unclaim(message.queue_id)
            return
        if self._backoff.wait():  # the store is failing: a pass starts it after the back-off
            self.unclaim(message.queue_id, wake=False)
            return
        plan = self._planned.pop(message.queue_id, None)
        if plan is None or plan.work.due != list(recipients):  # routed in another run
            plan = self._plan(_Work(message, content, list(recipients)))
        self._start([plan], group)

    @property
    def busy(self) -> bool:
        """Whether a pass is delivering something right now (tests wait for quiet)."""
        return bool(self._running)

    async def run(self) -> None:
        """Until `stop()`: start what is due without waiting for what is in flight (a long delivery,
        e.g. applying a replication answer, must not hold up mail queued after it), then
        sleep until the next due time or a wake-up. Every delivery task belongs to this
        TaskGroup, so cancelling `run` stops them all."""
        await self._record_noted()
        await self._close_leftovers()
        self._slots = asyncio.Semaphore(_PARALLEL_MESSAGES)
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self._load_deferred_hops())  # not before the first hand-off
            if self._server:
                group.create_task(self._renew_claims())
            try:
                await self._loop(group)
            finally:
                self._group = None

    async def _loop(self, group: asyncio.TaskGroup) -> None:
        while not self._stopping:
            started = 0
            if not self._backoff.wait():
                try:
                    started = await self._start_due(group)
                except Exception as exc:  # a bad pass must not stop the queue, nor spin
                    self._backoff.failed(exc, "queue pass")
            if started:
                continue
            delay = await self._idle_delay()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancellation that
            # races the wake-up, and then the server never stops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(delay, _IDLE_POLL) or 0.01):
                    await self._wake.wait()
            self._wake.clear()

    async def _renew_claims(self) -> None:
        """Until `stop()`: keep the leases of our deliveries in flight from running out (a
        third of the lease apart), so no other server takes over a slow delivery."""
        while not self._halt.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._lease / 3):
                    await self._halt.wait()
            ids = sorted(self._running)
            if ids and not self._halt.is_set():
                until = self._clock.now() + self._lease
                try:
                    await self._writer.submit(
                        functools.partial(claims.renew, ids=ids, server=self._server, until=until)
                    )
                except Exception as exc:  # the next round tries again; passes back off
                    self._backoff.failed(exc, "renewing queue claims")

    async def _record_noted(self) -> None:
        """Record the deliveries a previous run noted in the journal but had not committed
        when it stopped (a crash): those recipients are not sent again."""
        if self._journal is None:
            return
        try:
            noted = self._journal.pending()
            recorded = await self._writer.submit(
                functools.partial(self._record_noted_in, noted=noted)
            )
            self._journal.clear()
        except Exception:  # the queue must run all the same; the next start tries again
            log.exception("recording the delivery journal failed; those messages may go twice")
            return
        if recorded:
            log.warning("recorded %d delivery(ies) noted before a crash", recorded)

    def _record_noted_in(
        self, conn: Connection, *, noted: Mapping[str, Sequence[RecipientResult]]
    ) -> int:
        """In a write transaction: each noted result whose recipient is still queued."""
        count = 0
        ids = list(noted)
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]  # a big message loaded as its handle
            for message, content, rows in load_messages(conn, batch, store=self._store):
                due = [r for r, row in rows if row.state == RcptState.QUEUED.value]
                taken = {r.id for r in due}
                results = [r for r in noted[message.queue_id] if r.rcpt_id in taken]
                if results:
                    self._record_in(conn, _Work(message, content, due), results, close=True)
                    count += len(results)
        return count

    async def _load_deferred_hops(self) -> None:
        """At start: the next hops that hold deferred mail (a delivery there flushes it)."""

        def read() -> set[str]:
            with self._store.read() as conn:
                return deferred_hops(conn)

        try:
            self._deferred_hops.update(await asyncio.to_thread(read))
        except Exception:  # a failing store must not stop the queue: no flush until a deferral
            log.exception("reading the next hops of deferred mail failed")

    async def _flush(self, hop: str) -> None:
        """`hop` just took a message: its deferred mail is due now, not at its retry time
        (Postfix's flush on a destination's return). Only hops known to hold deferred mail
        cost a write, so a busy hop's every delivery does not."""
        if hop not in self._deferred_hops:
            return
        self._deferred_hops.discard(hop)
        now = self._clock.now()
        try:
            flushed = await self._writer.submit(lambda conn: flush_hop(conn, hop, now))
        except Exception:  # the retry schedule still holds; a later delivery tries again
            self._deferred_hops.add(hop)
            log.exception("flushing the deferred mail of %s failed", hop)
            return
        if flushed:
            emit(QueueFlushed(hop, flushed))
            self._wake.set()

    async def _close_leftovers(self) -> None:
        """At start: drop what a crash left finished. A failing store must not keep the
        queue from running (the next start tidies up)."""
        try:
            leftovers = await self._writer.submit(close_finished)
        except Exception as exc:
            self._backoff.failed(exc, "dropping finished messages at start")
            return
        if leftovers:
            log.warning("dropped %d finished message(s) left by a crash", len(leftovers))

    async def _idle_delay(self) -> float:
        """How long the loop may sleep: until the next due time, or the end of a back-off."""
        wait = self._backoff.wait()
        if wait:
            return wait
        try:
            next_at = await asyncio.to_thread(self._next_due)
        except Exception as exc:  # the store cannot even be read: try again after a back-off
            return self._backoff.failed(exc, "reading the queue")
        if next_at is None:
            return _IDLE_POLL
        delay = next_at - self._clock.now()
        if delay <= 0 and self._running:
            # What is due is in flight (a stalled next hop, results kept while the disk is
            # full): no pass can start it. Not 10 ms, which polled the database 100 times a
            # second for as long as any delivery took; a delivery that leaves work wakes us.
            return _IN_FLIGHT_POLL
        return max(0.0, delay)

    def _next_due(self) -> float | None:
        with self._store.read() as conn:
            if self._server:
                return claims.next_due(conn, self._server, self._clock.now())
            return next_due_at(conn)

    async def _start_due(self, group: asyncio.TaskGroup) -> int:
        """Start every due message not already in flight; returns how many were started."""
        if len(self._running) >= _MAX_IN_FLIGHT:
            return 0  # a finishing delivery wakes the loop; no more messages in memory meanwhile
        now = self._clock.now()
        # While the store is failing, one message per round finds out whether it is back.
        room = 1 if self._backoff.failing else _MAX_IN_FLIGHT - len(self._running)
        # One thread hop for both the due query and the loading: each hop costs about a
        # millisecond on a busy machine.
        ids, plans = await self._read_fresh(
            functools.partial(self._due_plans, now, frozenset(self._running), room)
        )
        if not ids:
            return 0
        self._start(plans, group)
        return len(ids)

    async def _read_fresh(
        self, read: Callable[[], tuple[list[str], list[_Plan]]]
    ) -> tuple[list[str], list[_Plan]]:
        """Run a pass's read in a thread; leave out what was claimed, started or finished
        while it read (hand-offs run meanwhile, and the snapshot may be older than their
        commits)."""
        settled: set[str] = set()
        self._reading.append(settled)
        try:
            ids, plans = await asyncio.to_thread(read)
        finally:
            # by identity: two readers' sets may be equal
            self._reading = [other for other in self._reading if other is not settled]
        taken = self._running | settled
        return ids, [p for p in plans if p.work.message.queue_id not in taken]

    def _finished(self, ids: Sequence[str]) -> None:
        """These messages are no longer in flight (their results are committed)."""
        self._running.difference_update(ids)
        for settled in self._reading:
            settled.update(ids)

    def _start(self, plans: list[_Plan], group: asyncio.TaskGroup) -> None:
        """Start delivering `plans` (network ones in their own tasks, local ones batched)."""
        self._running.update(p.work.message.queue_id for p in plans)
        fast = [p for p in plans if self._all_transactional(p)]
        slots = self._slots or asyncio.Semaphore(_PARALLEL_MESSAGES)
        for plan in plans:
            if not self._all_transactional(plan):
                group.create_task(self._guarded([plan], self._slow(plan, slots)))
        if fast:
            self._fast_queue.extend(fast)
            if not self._fast_draining:
                self._fast_draining = True
                group.create_task(self._drain_fast())

    async def _drain_fast(self) -> None:
        """Local deliveries go in one batch at a time: while a batch commits, what arrives
        gathers into the next one (one transaction for many messages, as a pass did)."""
        try:
            while self._fast_queue:
                batch, self._fast_queue = self._fast_queue, []
                await self._guarded(batch, self._process_in_transaction(batch))
        finally:
            self._fast_draining = False

    async def _slow(self, plan: _Plan, slots: asyncio.Semaphore) -> bool:
        async with slots:
            if self._stopping:  # not begun: it stays queued for the next start
                return False
            return await self._process(plan)

    async def _guarded(self, plans: list[_Plan], work: Coroutine[Any, Any, bool]) -> None:
        """Run one delivery job; then wake the loop if it left work for a pass: what it
        queued (notices, expansions), a deferral (a new due time), or room it freed."""
        wake = True
        try:
            wake = await work or len(self._running) >= _MAX_IN_FLIGHT
        except _UnrecordedError as kept:  # the next hop has it: never to a transport again
            wake = await self._record_until_written(kept)
        except Exception as exc:  # one message's fault must not cancel its siblings
            # Nothing was delivered (local mail commits with its delivery): the messages
            # stay queued, and the back-off keeps passes from trying them again at once.
            self._backoff.failed(exc, "delivery")
        finally:
            self._finished([p.work.message.queue_id for p in plans])
            if wake:
                self._wake.set()

    async def run_once(self) -> int:
        """One pass over every message due now, waiting for it; returns how many were handled
        (tests step the injected clock with this)."""
        now = self._clock.now()
        _, plans = await self._read_fresh(
            functools.partial(self._due_plans, now, frozenset(self._running), _BATCH)
        )
        if not plans:
            return 0
        ids = [p.work.message.queue_id for p in plans]
        self._running.update(ids)
        try:
            limit = asyncio.Semaphore(_PARALLEL_MESSAGES)
            fast = [p for p in plans if self._all_transactional(p)]
            async with asyncio.TaskGroup() as group:
                for plan in plans:
                    if not self._all_transactional(plan):
                        group.create_task(self._guarded([plan], self._slow(plan, limit)))
                if fast:
                    group.create_task(self._guarded(fast, self._process_in_transaction(fast)))
        finally:
            self._finished(ids)
        return len(plans)

    def _due_ids(self, now: float) -> list[str]:
        with self._store.read() as conn:
            if self._server:
                return claims.due_ids(conn, now, _BATCH, self._server)
            return due_queue_ids(conn, now, _BATCH)

    def _due_plans(
        self, now: float, running: frozenset[str], room: int
    ) -> tuple[list[str], list[_Plan]]:
        """In a worker thread: the due messages not in flight (at most `room`), planned."""
        ids = [i for i in self._due_ids(now) if i not in running][:room]
        if ids and self._server:  # ours for a lease: no other server starts them meanwhile
            with self._store.write() as conn:
                ids = claims.take(conn, ids, self._server, now, self._lease)
        return ids, (self._prepare(ids, now) if ids else [])

    def _prepare(self, ids: Sequence[str], now: float) -> list[_Plan]:
        """Load the messages (up to a memory budget; the rest wait for the next pass) and
        route their due recipients."""
        with self._store.read() as conn:
            loaded = load_messages(conn, ids, max_bytes=_PASS_BYTES, store=self._store)
        plans = []
        for message, content, rows in loaded:
            due = [
                r
                for r, row in rows
                if row.state == RcptState.QUEUED.value and row.next_attempt_at <= now
            ]
            if due:
                plans.append(self._plan(_Work(message, content, due)))
        return plans

    def _plan(self, work: _Work) -> _Plan:
        plan = _Plan(work)
        if count_received_headers(work.content.head) > self._settings.hop_limit:
            text = f"too many hops ({self._settings.hop_limit} Received headers): mail loop?"
            plan.results = [
                RecipientResult(r.id, Outcome.FAILED, 554, "5.4.6", text) for r in work.due
            ]
            return plan
        # The passes and the arrival here: an unknown recipient waits for replication to have
        # caught up since the message arrived before it bounces (routing.router rule 3).
        trace = read_trace(work.content.head, arrived=work.message.received_at)
        for rcpt in work.due:
            try:
                route = self._router(rcpt.recipient.address, trace)
            except Exception as exc:  # a routing fault defers this recipient, not the queue
                log.exception("routing %s failed", rcpt.recipient.address)
                text = f"routing failed ({exc.__class__.__name__}); will retry"
                plan.results.append(RecipientResult(rcpt.id, Outcome.DEFERRED, 451, "4.3.0", text))
                continue
            if route.transport is Transport.REJECT:
                plan.results.append(
                    RecipientResult(rcpt.id, Outcome.FAILED, 550, route.status, route.reason)
                )
            elif route.transport is Transport.DEFER:
                plan.results.append(
                    RecipientResult(rcpt.id, Outcome.DEFERRED, 451, route.status, route.reason)
                )
            else:
                key = (route.transport, "" if route.transport is Transport.LOCAL else route.nexthop)
                plan.groups[key].append((rcpt, route))
                work.hops[rcpt.id] = _hop(*key)
        return plan

    def _all_transactional(self, plan: _Plan) -> bool:
        return all(transport in self._transactional for transport, _ in plan.groups)

    async def _process_in_transaction(self, plans: list[_Plan]) -> bool:
        """Deliver, record and dequeue in one transaction shared with other writers; if that
        fails, message by message, so a message that cannot be delivered holds no other up.
        True when it left work for a pass (see `_record_in`)."""
        try:
            left = await self._recording(functools.partial(self._deliver_and_record, plans=plans))
        except StoreUnavailableError:
            raise  # no message is to blame: they all wait for the back-off (_guarded)
        except Exception as exc:
            if len(plans) > 1:
                await asyncio.gather(*(self._process_in_transaction([p]) for p in plans))
                return True
            # a transport bug defers; it never loses the message
            plan = plans[0]
            if is_conflict(exc):  # another server's transaction: retried, nothing is wrong
                log.warning(
                    "local delivery of %s deferred: a conflict with another server's "
                    "transaction (deadlock or serialization); retried",
                    plan.work.message.queue_id,
                )
            else:
                log.exception("local delivery failed for %s", plan.work.message.queue_id)
            results = list(plan.results)
            for (transport, _), members in plan.groups.items():
                results.extend(_internal_error(transport, exc, members))
            await self._recording(
                lambda conn, sink: self._record_in(conn, plan.work, results, close=True, sink=sink)
            )
            return True
        self._backoff.succeeded()
        return left

    def _deliver_and_record(
        self, conn: Connection, sink: list[Event], *, plans: list[_Plan]
    ) -> bool:
        """Settle `plans` in the caller's transaction; whether they left work for a pass."""
        closed, noticed = self._settle_in(conn, plans, sink)
        return noticed or len(closed) < len(plans)

    def _settle_in(
        self, conn: Connection, plans: list[_Plan], sink: list[Event]
    ) -> tuple[list[str], bool]:
        """Deliver to the transactional transports, record every result, drop what is done;
        (the messages dropped, whether a notice was queued)."""
        if self._server:  # a server that stalled past its lease delivers nothing another took
            ours = claims.hold(conn, [p.work.message.queue_id for p in plans], self._server)
            lost = [p.work.message.queue_id for p in plans if p.work.message.queue_id not in ours]
            if lost:
                log.warning("queue claims taken over by another server: %s", ", ".join(lost))
                plans = [p for p in plans if p.work.message.queue_id in ours]
        results = {id(plan): list(plan.results) for plan in plans}
        by_transport: dict[Transport, list[tuple[_Plan, Delivery]]] = defaultdict(list)
        for plan in plans:
            work = plan.work
            for (transport, _), members in plan.groups.items():
                by_transport[transport].append(
                    (plan, Delivery(work.message, work.content, members))
                )
        for transport, items in by_transport.items():
            agent = self._agents[transport]
            assert isinstance(agent, TransactionalAgent)
            answers = agent.deliver_in(conn, [delivery for _, delivery in items])
            for (plan, _), answer in zip(items, answers, strict=True):
                results[id(plan)].extend(answer)
        noticed = [
            self._record_in(conn, p.work, results[id(p)], close=False, sink=sink) for p in plans
        ]
        return close_done(conn, [plan.work.message.queue_id for plan in plans]), any(noticed)

    async def _process(self, plan: _Plan) -> bool:
        """Hand the message to each next hop at once. A hop's acceptances are recorded as
        soon as it answers (its own commit, shared with whatever else is writing, never
        waiting for the other hops nor lingering for company): a crash after a next hop's 250
        must not send the message there again. Everything else is recorded at the end, with
        the message closed if it is done."""
        work = plan.work
        results = list(plan.results)
        recorded: set[int] = set()  # recipients whose delivery is committed already
        notes: list[int] = []  # journal tokens (queue.journal), done once committed
        pending = len(plan.groups)

        async def one(transport: Transport, members: list[tuple[QueuedRecipient, Route]]) -> None:
            nonlocal pending
            outcome = await self._hand_over(work, transport, members)
            results.extend(outcome)
            pending -= 1
            delivered = [r for r in outcome if r.outcome is Outcome.DELIVERED]
            fresh = [r for r in delivered if not r.already_recorded]
            if fresh and self._journal is not None:  # noted before anything else can happen
                notes.append(self._journal.note(work.message.queue_id, fresh))
            if pending and delivered:  # the last hop's go with the closing record below
                await self._record_early(work, delivered, recorded)
            if delivered:
                await self._flush(_hop(transport, members[0][1].nexthop))

        await asyncio.gather(*(one(t, m) for (t, _), m in plan.groups.items()))
        rest = [r for r in results if r.rcpt_id not in recorded]
        left = await self._record_results(
            work, rest, lazy=not any(r.outcome is Outcome.DELIVERED for r in rest)
        )
        if self._journal is not None:
            for token in notes:
                self._journal.done(token)
        log.debug("processed %s: %d result(s)", work.message.queue_id, len(results))
        return left

    async def _record_early(
        self, work: _Work, delivered: list[RecipientResult], recorded: set[int]
    ) -> None:
        """Commit these deliveries now; if that fails, the closing record tries again."""
        try:
            await self._recording(
                lambda conn, sink: self._record_in(conn, work, delivered, close=False, sink=sink)
            )
        except Exception:
            log.exception("recording deliveries of %s failed", work.message.queue_id)
            return
        recorded.update(r.rcpt_id for r in delivered)

    async def _hand_over(
        self, work: _Work, transport: Transport, members: list[tuple[QueuedRecipient, Route]]
    ) -> list[RecipientResult]:
        agent = self._agents.get(transport)
        if agent is None:
            text = f"no {transport} transport on this server yet"
            return [RecipientResult(r.id, Outcome.DEFERRED, 451, "4.3.5", text) for r, _ in members]
        try:
            if isinstance(agent, TransactionalAgent):
                delivery = Delivery(work.message, work.content, members)
                answers = await self._writer.submit(lambda conn: agent.deliver_in(conn, [delivery]))
                return answers[0]
            return await self._attempt(agent, work, transport, members)
        except StoreUnavailableError as exc:  # not the transport's fault: logged per interval
            self._backoff.failed(exc, f"{transport} delivery")
            text = f"{transport} delivery could not be written ({exc.message}); will retry"
            return [RecipientResult(r.id, Outcome.DEFERRED, 452, "4.3.1", text) for r, _ in members]
        except Exception as exc:  # a transport bug defers; it never loses the message
            log.exception("%s transport failed for %s", transport, work.message.queue_id)
            return _internal_error(transport, exc, members)

    async def _attempt(
        self,
        agent: DeliveryAgent,
        work: _Work,
        transport: Transport,
        members: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        """Hand over to a network transport, as an attempt `queue list` can see (attempts)."""
        addresses = [r.recipient.address for r, _ in members]
        nexthop = f"{transport} {members[0][1].nexthop}".strip()
        with self.attempts.track(work.message.queue_id, addresses, nexthop):
            return await agent.deliver(work.message, work.content, members)

    # -- recording -------------------------------------------------------------------------

    async def _record_results(
        self, work: _Work, results: Sequence[RecipientResult], *, lazy: bool = False
    ) -> bool:
        """Write what a transport obtained (see `_record_in`). If the write fails, raise
        `_UnrecordedError` holding the record: the results stay in memory, and `_guarded`
        writes them once the store takes them (`_record_until_written`)."""

        def record(conn: Connection, sink: list[Event]) -> bool:
            return self._record_in(conn, work, results, close=True, sink=sink)

        try:
            left = await self._recording(record, lazy=lazy)
        except Exception as exc:
            raise _UnrecordedError(work, record) from exc
        self._backoff.succeeded()
        return left

    async def _record_until_written(self, kept: _UnrecordedError) -> bool:
        """Results that could not be written: write them after the back-off, as often as it
        takes. Meanwhile the message stays in flight (`_running`), so no pass hands it to a
        transport again: the next hop already has it, and a second copy is what must not
        happen (a full disk once turned 30 messages into 18,997). The retries of every kept
        record share the back-off's rounds, so they meet in one commit."""
        error = kept.__cause__
        work = kept.work
        addresses = [r.recipient.address for r in work.due]
        with self.attempts.track(work.message.queue_id, addresses, "", "recording"):
            while True:
                report_stage(f"delivered; recording the results failed ({error}), retrying")
                await asyncio.sleep(self._backoff.failed(error, "recording delivery results"))
                try:
                    left = await self._recording(kept.record)
                except Exception as exc:
                    error = exc
                    continue
                self._backoff.succeeded()
                return left

    async def _recording(self, record: Recording[T], *, lazy: bool = False) -> T:
        """Run a record job through the writer and tell its events once it has committed (a
        job may run more than once: only its last run's events are true)."""
        events: list[Event] = []

        def job(conn: Connection) -> T:
            events.clear()
            return record(conn, events)

        result = await self._writer.submit(job, lazy=lazy)
        for event in events:
            emit(event)
        return result

    def _record_in(
        self,
        conn: Connection,
        work: _Work,
        results: Sequence[RecipientResult],
        *,
        close: bool,
        sink: list[Event] | None = None,
    ) -> bool:
        """Write every result and the notices they call for, in the caller's transaction;
        with `close`, drop the message if every recipient is final (else the caller will).
        True when it left work for a pass: a notice queued, or (with `close`) the message
        still has queued recipients."""
        now = self._clock.now()
        by_id = {r.id: r for r in work.due}
        notices: dict[DsnKind, list[DsnEntry]] = defaultdict(list)
        delayed_ids: list[int] = []
        stamp = datetime.fromtimestamp(now, UTC)
        for result in results:
            rcpt = by_id.get(result.rcpt_id)
            if rcpt is None:
                continue
            hop = work.hops.get(rcpt.id, "")
            notice = self._record_one(conn, work.message, rcpt, result, now, hop=hop, sink=sink)
            if notice is not None:
                kind, status, diagnostic = notice
                notices[kind].append(
                    DsnEntry(
                        recipient=rcpt.recipient,
                        action=_ACTIONS[kind],
                        status=status,
                        diagnostic=diagnostic,
                        remote_mta=result.remote_mta,
                        last_attempt=stamp,
                        will_retry_until=datetime.fromtimestamp(
                            work.message.received_at + self._settings.expiry, UTC
                        )
                        if kind is DsnKind.DELAY
                        else None,
                    )
                )
                if kind is DsnKind.DELAY:
                    delayed_ids.append(rcpt.id)
        queued = [self._queue_notice(conn, work, k, e, now, sink) for k, e in notices.items()]
        mark_delay_notified(conn, delayed_ids)
        still_queued = close and not close_if_done(conn, work.message.queue_id)
        return any(queued) or still_queued

    def _record_one(
        self,
        conn: Connection,
        message: QueuedMessage,
        rcpt: QueuedRecipient,
        result: RecipientResult,
        now: float,
        *,
        hop: str = "",
        sink: list[Event] | None = None,
    ) -> tuple[DsnKind, str, str] | None:
        """Write one result; returns the notice it may need: (kind, status, diagnostic). What
        happened goes to `sink` as catalogued events (their names name the tracking events)."""
        told = sink if sink is not None else []
        qid, address = message.queue_id, rcpt.recipient.address
        event = TrackEvent(
            now,
            "",
            message.queue_id,
            message.message_id,
            message.envelope.sender,
            rcpt.recipient.address,
            self._site,
        )
        detail = f"{result.code} {result.status} {result.text}".strip()
        if result.outcome is Outcome.DELIVERED:
            told.append(
                QueueDelivered(qid, address) if hop == "local" else QueueRelayed(qid, address, hop)
            )
            if not result.already_recorded:
                finish_recipient(
                    conn,
                    rcpt.id,
                    state=RcptState.DELIVERED,
                    status=result.status,
                    text=detail,
                    now=now,
                )
                track(conn, [_with(event, QueueRelayed.name, f"to {result.remote_mta}: {detail}")])
            return DsnKind.SUCCESS, result.status, detail
        if result.outcome is Outcome.FAILED:
            finish_recipient(
                conn, rcpt.id, state=RcptState.FAILED, status=result.status, text=detail, now=now
            )
            track(conn, [_with(event, QueueBounced.name, detail)])
            told.append(QueueBounced(qid, address, hop, result.status, result.text))
            return DsnKind.FAILURE, result.status, detail
        if now - message.received_at >= self._settings.expiry:
            text = f"gave up after {self._settings.expiry / 3600:g} h; last error: {detail}"
            finish_recipient(
                conn, rcpt.id, state=RcptState.FAILED, status="4.4.7", text=text, now=now
            )
            track(conn, [_with(event, QueueExpired.name, text)])
            told.append(QueueExpired(qid, address, hop))
            return DsnKind.FAILURE, "4.4.7", text
        backoff = min(self._settings.retry_initial * 2**rcpt.attempts, self._settings.retry_max)
        defer_recipient(
            conn,
            rcpt.id,
            status=result.status,
            text=detail,
            now=now,
            next_at=now + backoff,
            nexthop=hop,
        )
        if hop:
            self._deferred_hops.add(hop)
        track(conn, [_with(event, QueueDeferred.name, f"{detail}; next try in {backoff:g} s")])
        told.append(QueueDeferred(qid, address, hop, result.status, backoff))
        age = now - message.received_at
        if (
            self._settings.delay_notice
            and age >= self._settings.delay_notice
            and not rcpt.delay_notified
        ):
            return DsnKind.DELAY, result.status, detail
        return None

    def _queue_notice(  # noqa: PLR0917 -- the record's state, passed down
        self,
        conn: Connection,
        work: _Work,
        kind: DsnKind,
        entries: list[DsnEntry],
        now: float,
        sink: list[Event] | None = None,
    ) -> bool:
        """Queue a DSN in this transaction (build_dsn says None for <> senders, DSNs, NOTIFY);
        whether one was queued."""
        message = work.message
        dsn = build_dsn(
            reporting_mta=self._reporting_mta,
            envelope=message.envelope,
            queue_id=message.queue_id,
            message_id=message.message_id,
            arrival=datetime.fromtimestamp(message.received_at, UTC),
            content=work.content.whole() if work.content.in_memory else work.content.head,
            original_size=work.content.size,
            entries=entries,
            kind=kind,
            now=datetime.fromtimestamp(now, UTC),
        )
        if dsn is None:
            if kind is DsnKind.FAILURE and not message.envelope.sender:
                log.warning("failure of %s not reported: null sender", message.queue_id)
            return False
        envelope = Envelope(
            sender="",
            recipients=(EnvelopeRecipient(message.envelope.sender, frozenset({Notify.NEVER})),),
            body=dsn_body_type(dsn),
            smtputf8=not message.envelope.sender.isascii(),
        )
        queue_id = new_queue_id(now)
        notice = NewMessage(envelope, Content.of(dsn), is_dsn=True)
        insert_message(conn, queue_id, notice, now, self._site)
        track(
            conn,
            [
                TrackEvent(
                    now,
                    QueueDsn.name,
                    message.queue_id,
                    message.message_id,
                    message.envelope.sender,
                    entry.recipient.address,
                    self._site,
                    f"{kind} notice to {message.envelope.sender} queued as {queue_id}",
                )
                for entry in entries
            ],
        )
        if sink is not None:
            sink.append(QueueDsn(message.queue_id, str(kind), queue_id))
        return True


_ACTIONS = {DsnKind.FAILURE: "failed", DsnKind.DELAY: "delayed", DsnKind.SUCCESS: "delivered"}


def _with(event: TrackEvent, name: str, detail: str) -> TrackEvent:
    return TrackEvent(
        event.at,
        name,
        event.queue_id,
        event.message_id,
        event.sender,
        event.recipient,
        event.site,
        detail,
    )
