"""The queue manager: picks due recipients, routes them, hands them to transports, records.

One job: move every queued recipient to a final state. Each pass takes the messages with a
recipient due now, routes each recipient (`router(address) -> Route`), groups recipients of one
message by (transport, next hop) so one transaction carries them, calls the registered
transport, and records each result together with the DSN it calls for, in one transaction
(a transport that commits its own delivery, like local delivery, records through `record` in
that transaction, so delivery, notice and dequeueing cannot be split by a crash):
- delivered: final; a SUCCESS DSN if the sender asked for one;
- failed (5xx, routing reject, hop limit): final; a FAILURE DSN (never for a DSN or for <>);
- deferred (4xx, network): retried after `retry_initial * 2**(attempts-1)` capped at
  `retry_max`; a DELAY DSN once after `delay_notice`; failed with 4.4.7 at `expiry`.
Time comes from the injected clock, so tests step through 48 hours in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection

from sitemail.config.model import QueueConfig
from sitemail.core.clock import Clock
from sitemail.core.envelope import Envelope, EnvelopeRecipient, Notify
from sitemail.queue.dsn import DsnEntry, DsnKind, build_dsn, dsn_body_type
from sitemail.queue.model import (
    DeliveryAgent,
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    RcptState,
    RecipientResult,
)
from sitemail.queue.records import (
    NewMessage,
    TrackEvent,
    close_if_done,
    defer_recipient,
    due_queue_ids,
    finish_recipient,
    insert_message,
    load_message,
    load_recipients,
    mark_delay_notified,
    new_queue_id,
    next_due_at,
    track,
)
from sitemail.routing.route import Route, Transport
from sitemail.store.engine import Store

__all__ = ["QueueManager", "count_received_headers"]

log = logging.getLogger("sitemail.queue")

_RECEIVED = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)
_BATCH = 100
_PARALLEL_MESSAGES = 32
_IDLE_POLL = 5.0


def count_received_headers(content: bytes) -> int:
    return len(_RECEIVED.findall(content.split(b"\r\n\r\n", 1)[0]))


@dataclass(frozen=True, slots=True)
class _Work:
    message: QueuedMessage
    content: bytes
    due: list[QueuedRecipient]


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
        router: Callable[[str], Route],
        agents: Mapping[Transport, DeliveryAgent],
    ) -> None:
        self._store = store
        self._clock = clock
        self._site = site
        self._reporting_mta = reporting_mta
        self._settings = settings
        self._router = router
        self._agents = dict(agents)
        self._wake = asyncio.Event()
        self._running: set[str] = set()

    @property
    def busy(self) -> bool:
        """Whether a pass is delivering something right now (tests wait for quiet)."""
        return bool(self._running)

    def register(self, transport: Transport, agent: DeliveryAgent) -> None:
        """Add a transport after construction (one that records through `record`)."""
        self._agents[transport] = agent

    def wake(self) -> None:
        """New mail or an admin retry: look at the queue now."""
        self._wake.set()

    async def run(self) -> None:
        """Forever: start every message that is due, without waiting for those in flight (a
        long delivery must not hold up mail queued after it), then sleep until the next due
        time or a wake-up. Every task belongs to this TaskGroup, so cancelling `run` stops
        them all."""
        slots = asyncio.Semaphore(_PARALLEL_MESSAGES)
        async with asyncio.TaskGroup() as group:
            while True:
                try:
                    started = await self._start_due(group, slots)
                except Exception:  # a bad pass must not stop the queue
                    log.exception("queue pass failed")
                    started = 0
                if started:
                    continue
                next_at = await asyncio.to_thread(self._next_due)
                delay = _IDLE_POLL if next_at is None else max(0.0, next_at - self._clock.now())
                # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancellation that
                # races the wake-up, and then the server never stops.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(delay, _IDLE_POLL) or 0.01):
                        await self._wake.wait()
                self._wake.clear()

    async def _start_due(self, group: asyncio.TaskGroup, slots: asyncio.Semaphore) -> int:
        ids = await asyncio.to_thread(self._due_ids, self._clock.now())
        ids = [i for i in ids if i not in self._running]
        for queue_id in ids:
            self._running.add(queue_id)
            group.create_task(self._process_in_slot(queue_id, slots), name=f"deliver-{queue_id}")
        return len(ids)

    async def _process_in_slot(self, queue_id: str, slots: asyncio.Semaphore) -> None:
        try:
            async with slots:
                await self._process(queue_id)
        except Exception:  # one message's fault must not cancel its siblings
            log.exception("delivery of %s failed; it stays queued", queue_id)
        finally:
            self._running.discard(queue_id)
            self._wake.set()  # what it queued (notices, expansions) or freed is due now

    def _next_due(self) -> float | None:
        with self._store.read() as conn:
            return next_due_at(conn)

    async def run_once(self) -> int:
        """One pass over every message due now; returns how many were handled."""
        now = self._clock.now()
        ids = await asyncio.to_thread(self._due_ids, now)
        ids = [i for i in ids if i not in self._running]
        if not ids:
            return 0
        limit = asyncio.Semaphore(_PARALLEL_MESSAGES)

        async def one(queue_id: str) -> None:
            async with limit:
                await self._process(queue_id)

        self._running.update(ids)
        try:
            async with asyncio.TaskGroup() as group:
                for queue_id in ids:
                    group.create_task(one(queue_id))
        finally:
            self._running.difference_update(ids)
        return len(ids)

    def _due_ids(self, now: float) -> list[str]:
        with self._store.read() as conn:
            return due_queue_ids(conn, now, _BATCH)

    def _load(self, queue_id: str, now: float) -> _Work | None:
        with self._store.read() as conn:
            loaded = load_message(conn, queue_id)
            if loaded is None:
                return None
            rows = load_recipients(conn, queue_id, RcptState.QUEUED)
        due = [r for r, row in rows if row.next_attempt_at <= now]
        return _Work(loaded[0], loaded[1], due)

    async def _process(self, queue_id: str) -> None:
        now = self._clock.now()
        work = await asyncio.to_thread(self._load, queue_id, now)
        if work is None or not work.due:
            return
        results: list[RecipientResult] = []
        if count_received_headers(work.content) > self._settings.hop_limit:
            text = f"too many hops ({self._settings.hop_limit} Received headers): mail loop?"
            results = [RecipientResult(r.id, Outcome.FAILED, 554, "5.4.6", text) for r in work.due]
        else:
            results = await self._deliver(work)
        await asyncio.to_thread(self._record, work, results)
        log.debug("processed %s: %d result(s)", queue_id, len(results))

    async def _deliver(self, work: _Work) -> list[RecipientResult]:
        groups: dict[tuple[Transport, str], list[tuple[QueuedRecipient, Route]]] = defaultdict(list)
        results: list[RecipientResult] = []
        for rcpt in work.due:
            route = await asyncio.to_thread(self._router, rcpt.recipient.address)
            if route.transport is Transport.REJECT:
                results.append(
                    RecipientResult(rcpt.id, Outcome.FAILED, 550, route.status, route.reason)
                )
            elif route.transport is Transport.DEFER:
                results.append(
                    RecipientResult(rcpt.id, Outcome.DEFERRED, 451, route.status, route.reason)
                )
            else:
                key = (route.transport, "" if route.transport is Transport.LOCAL else route.nexthop)
                groups[key].append((rcpt, route))
        outcomes = await asyncio.gather(
            *(
                self._hand_over(work, transport, members)
                for (transport, _), members in groups.items()
            )
        )
        for outcome in outcomes:
            results.extend(outcome)
        return results

    async def _hand_over(
        self, work: _Work, transport: Transport, members: list[tuple[QueuedRecipient, Route]]
    ) -> list[RecipientResult]:
        agent = self._agents.get(transport)
        if agent is None:
            text = f"no {transport} transport on this server yet"
            return [RecipientResult(r.id, Outcome.DEFERRED, 451, "4.3.5", text) for r, _ in members]
        try:
            return await agent.deliver(work.message, work.content, members)
        except Exception as exc:  # a transport bug defers; it never loses the message
            log.exception("%s transport failed for %s", transport, work.message.queue_id)
            text = f"internal error in {transport} transport: {exc.__class__.__name__}"
            return [RecipientResult(r.id, Outcome.DEFERRED, 451, "4.3.0", text) for r, _ in members]

    # -- recording -------------------------------------------------------------------------

    def _record(self, work: _Work, results: Sequence[RecipientResult]) -> None:
        """Write every result the transport did not commit itself, in one transaction."""
        pending = [r for r in results if not r.already_recorded]
        if not pending:
            return
        with self._store.write() as conn:
            self.record(conn, work.message, work.content, work.due, pending)

    def record(
        self,
        conn: Connection,
        message: QueuedMessage,
        content: bytes,
        recipients: Sequence[QueuedRecipient],
        results: Sequence[RecipientResult],
    ) -> None:
        """Write results and the notices they call for, and dequeue the message once every
        recipient is final, in the caller's transaction (this is the `ResultRecorder`)."""
        work = _Work(message, content, list(recipients))
        now = self._clock.now()
        by_id = {r.id: r for r in work.due}
        notices: dict[DsnKind, list[DsnEntry]] = defaultdict(list)
        delayed_ids: list[int] = []
        stamp = datetime.fromtimestamp(now, UTC)
        for result in results:
            rcpt = by_id.get(result.rcpt_id)
            if rcpt is None:
                continue
            notice = self._record_one(conn, work.message, rcpt, result, now)
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
        for kind, entries in notices.items():
            self._queue_notice(conn, work, kind, entries, now)
        mark_delay_notified(conn, delayed_ids)
        close_if_done(conn, work.message.queue_id)

    def _record_one(
        self,
        conn: Connection,
        message: QueuedMessage,
        rcpt: QueuedRecipient,
        result: RecipientResult,
        now: float,
    ) -> tuple[DsnKind, str, str] | None:
        """Write one result; returns the notice it may need: (kind, status, diagnostic)."""
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
            if not result.already_recorded:
                finish_recipient(
                    conn,
                    rcpt.id,
                    state=RcptState.DELIVERED,
                    status=result.status,
                    text=detail,
                    now=now,
                )
                track(conn, [_with(event, "relayed", f"to {result.remote_mta}: {detail}")])
            return DsnKind.SUCCESS, result.status, detail
        if result.outcome is Outcome.FAILED:
            finish_recipient(
                conn, rcpt.id, state=RcptState.FAILED, status=result.status, text=detail, now=now
            )
            track(conn, [_with(event, "bounced", detail)])
            return DsnKind.FAILURE, result.status, detail
        if now - message.received_at >= self._settings.expiry:
            text = f"gave up after {self._settings.expiry / 3600:g} h; last error: {detail}"
            finish_recipient(
                conn, rcpt.id, state=RcptState.FAILED, status="4.4.7", text=text, now=now
            )
            track(conn, [_with(event, "expired", text)])
            return DsnKind.FAILURE, "4.4.7", text
        backoff = min(self._settings.retry_initial * 2**rcpt.attempts, self._settings.retry_max)
        defer_recipient(
            conn, rcpt.id, status=result.status, text=detail, now=now, next_at=now + backoff
        )
        track(conn, [_with(event, "deferred", f"{detail}; next try in {backoff:g} s")])
        age = now - message.received_at
        if (
            self._settings.delay_notice
            and age >= self._settings.delay_notice
            and not rcpt.delay_notified
        ):
            return DsnKind.DELAY, result.status, detail
        return None

    def _queue_notice(
        self, conn: Connection, work: _Work, kind: DsnKind, entries: list[DsnEntry], now: float
    ) -> None:
        """Queue a DSN in this transaction (build_dsn says None for <> senders, DSNs, NOTIFY)."""
        message = work.message
        dsn = build_dsn(
            reporting_mta=self._reporting_mta,
            envelope=message.envelope,
            queue_id=message.queue_id,
            message_id=message.message_id,
            arrival=datetime.fromtimestamp(message.received_at, UTC),
            content=work.content,
            entries=entries,
            kind=kind,
            now=datetime.fromtimestamp(now, UTC),
        )
        if dsn is None:
            if kind is DsnKind.FAILURE and not message.envelope.sender:
                log.warning("failure of %s not reported: null sender", message.queue_id)
            return
        envelope = Envelope(
            sender="",
            recipients=(EnvelopeRecipient(message.envelope.sender, frozenset({Notify.NEVER})),),
            body=dsn_body_type(dsn),
            smtputf8=not message.envelope.sender.isascii(),
        )
        queue_id = new_queue_id(now)
        insert_message(conn, queue_id, NewMessage(envelope, dsn, is_dsn=True), now, self._site)
        track(
            conn,
            [
                TrackEvent(
                    now,
                    "dsn",
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
