"""Queue writes that fail (disk full, I/O error, locked) never cause a resend.

A real store, spool and QueueManager; the fakes are the transports and a writer whose every
write fails while `broken` (what a full disk does to the store), and the back-off's clock,
which only the test moves: so "nothing is tried again before the back-off is over" is
checked without any timing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection

from sitemail.admin.service import AdminService
from sitemail.config.model import QueueConfig
from sitemail.core.clock import ManualClock
from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.core.errors import StoreUnavailableError
from sitemail.queue.backoff import Backoff
from sitemail.queue.content import Content
from sitemail.queue.manager import QueueManager
from sitemail.queue.model import Delivery, Outcome, QueuedMessage, QueuedRecipient, RecipientResult
from sitemail.queue.records import NewMessage, insert_message
from sitemail.queue.spool import Spool
from sitemail.routing.route import Route, Transport
from sitemail.store.writer import GroupWriter

T = TypeVar("T")
FULL = "database write failed: OperationalError: database or disk is full"


class BrokenDiskWriter(GroupWriter):
    """A GroupWriter whose writes all fail while `broken`; counts what it was given."""

    broken = False
    refused = 0

    async def submit(self, job: Callable[[Connection], T], *, lazy: bool = False) -> T:
        if self.broken:
            self.refused += 1
            raise StoreUnavailableError(FULL)
        return await super().submit(job, lazy=lazy)


class Ticker:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Relay:
    """A network transport: answers `outcome` for every recipient after `hold` is set."""

    def __init__(self, outcome: Outcome = Outcome.DELIVERED) -> None:
        self.given: list[str] = []
        self.hold = asyncio.Event()
        self.outcome = outcome

    async def deliver(
        self,
        message: QueuedMessage,
        content: bytes,
        recipients: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        del content
        self.given.append(message.queue_id)
        await self.hold.wait()
        code, status = (250, "2.0.0") if self.outcome is Outcome.DELIVERED else (550, "5.1.1")
        return [RecipientResult(r.id, self.outcome, code, status, "ok") for r, _ in recipients]


class Local:
    """A transactional transport: counts the transactions it was called in."""

    def __init__(self) -> None:
        self.calls = 0
        self.delivered: list[str] = []

    async def deliver(self, *args: Any) -> list[RecipientResult]:
        raise AssertionError("transactional")

    def deliver_in(
        self, conn: Connection, batch: Sequence[Delivery]
    ) -> list[list[RecipientResult]]:
        del conn
        self.calls += 1
        self.delivered.extend(d.message.queue_id for d in batch)
        return [
            [
                RecipientResult(r.id, Outcome.DELIVERED, 250, "2.0.0", "stored")
                for r, _ in d.recipients
            ]
            for d in batch
        ]


def _route(address: str, trace: Mapping[str, float]) -> Route:
    del trace
    if address.endswith("@local.test"):
        return Route(Transport.LOCAL, "", address)
    return Route(Transport.RELAY, "relay.test", address)


def _message(number: int, domain: str = "remote.test", sender: str = "a@sitea.test") -> NewMessage:
    envelope = Envelope(sender, (EnvelopeRecipient(f"r{number}@{domain}"),))
    return NewMessage(envelope, Content.of(f"Message-ID: <m{number}@t>\r\n\r\nbody\r\n".encode()))


@asynccontextmanager
async def _queue(
    site: AdminService, relay: Relay, local: Local, ticker: Ticker
) -> AsyncIterator[tuple[Spool, QueueManager, BrokenDiskWriter]]:
    writer = BrokenDiskWriter(site.store)
    manager = QueueManager(
        site.store,
        ManualClock(),
        site="SiteA",
        reporting_mta="servera.sitea.test",
        settings=QueueConfig(),
        router=_route,
        agents={Transport.RELAY: relay, Transport.LOCAL: local},
        writer=writer,
        # real sleeps of 10 ms between tries; the rounds end only when the test moves `ticker`
        backoff=Backoff(initial=0.01, maximum=0.01, now=ticker),
    )
    spool = Spool(site.store, ManualClock(), "SiteA", writer=writer, handoff=manager)
    await writer.start()
    task = asyncio.create_task(manager.run())
    try:
        yield spool, manager, writer
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await spool.stop()
        await writer.stop()


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not check():  # noqa: ASYNC110 - the conditions live in other objects
            await asyncio.sleep(0.005)


def _queued(site: AdminService) -> list[str]:
    return [e.queue_id for e in site.queue.entries()]


def test_results_that_cannot_be_recorded_are_kept_and_never_sent_again(
    site_a: AdminService, caplog: pytest.LogCaptureFixture
) -> None:
    """The next hop took 30 messages, then the disk filled: each was handed over once, the
    results are written when the disk is back, and the failure is logged once, not 30 times."""

    async def scenario() -> None:
        relay, local, ticker = Relay(), Local(), Ticker()
        async with _queue(site_a, relay, local, ticker) as (spool, manager, writer):
            ids = [await spool.enqueue(_message(n)) for n in range(30)]
            await _until(lambda: len(relay.given) == 30)
            writer.broken = True  # the disk fills while the next hop holds the messages
            relay.hold.set()
            await _until(lambda: writer.refused >= 90)  # each kept record tried a few times
            ticker.t += 30.0  # back-off rounds end (passes run again), within one log interval
            await _until(lambda: writer.refused >= 180)
            assert sorted(relay.given) == sorted(ids)  # nothing handed over twice
            assert manager.busy  # still in flight: no pass may pick them up
            writer.broken = False
            await _until(lambda: not manager.busy)
        assert sorted(relay.given) == sorted(ids)
        assert _queued(site_a) == []

    with caplog.at_level(logging.INFO, logger="sitemail.queue"):
        asyncio.run(scenario())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # the interval is 60 s
    assert "recording delivery results failed" in errors[0].getMessage()
    assert any("work again" in r.getMessage() for r in caplog.records)


def test_a_failure_notice_is_queued_once_when_its_record_finally_commits(
    site_a: AdminService,
) -> None:
    """A 5xx whose record (with the DSN it calls for) failed: one DSN once written."""

    async def scenario() -> None:
        relay, local, ticker = Relay(Outcome.FAILED), Local(), Ticker()
        async with _queue(site_a, relay, local, ticker) as (spool, manager, writer):
            queue_id = await spool.enqueue(_message(1, sender="a@local.test"))
            await _until(lambda: relay.given == [queue_id])
            writer.broken = True
            relay.hold.set()
            await _until(lambda: writer.refused >= 5)
            writer.broken = False
            await _until(lambda: len(local.delivered) == 1 and not manager.busy)
        assert relay.given == [queue_id]
        assert len(local.delivered) == 1  # the DSN, to the sender's mailbox
        assert _queued(site_a) == []

    asyncio.run(scenario())


def test_local_delivery_waits_for_the_back_off_instead_of_spinning(site_a: AdminService) -> None:
    """Local mail whose transaction fails is tried again only after the back-off, as one
    batch (no message is to blame), and delivered once the store takes writes again."""

    async def scenario() -> None:
        relay, local, ticker = Relay(), Local(), Ticker()
        with site_a.store.write() as conn:  # queued behind the manager's back (a restart)
            for n in range(5):
                insert_message(conn, f"L{n}", _message(n, "local.test"), 0.0, "SiteA")  # type: ignore[arg-type]
        async with _queue(site_a, relay, local, ticker) as (_, manager, writer):
            writer.broken = True
            await _until(lambda: writer.refused >= 1)
            await asyncio.sleep(0.2)  # twenty sleeps of the back-off: its round never ends
            assert writer.refused == 1  # one batch, not one try per message, and no spin
            writer.broken = False
            ticker.t += 1.0
            await _until(lambda: len(local.delivered) == 5 and not manager.busy)
        assert _queued(site_a) == []

    asyncio.run(scenario())


def test_new_mail_is_not_started_while_the_store_is_failing(site_a: AdminService) -> None:
    """A hand-off during the back-off is declined; a pass delivers the message after it."""

    async def scenario() -> None:
        relay, local, ticker = Relay(), Local(), Ticker()
        relay.hold.set()
        async with _queue(site_a, relay, local, ticker) as (spool, manager, writer):
            writer.broken = True
            with pytest.raises(StoreUnavailableError):
                await spool.enqueue(_message(1))  # not accepted: the client is told 4xx
            writer.broken = False
            queue_id = await spool.enqueue(_message(2))  # accepted, during the back-off
            await asyncio.sleep(0.1)
            assert relay.given == []
            ticker.t += 1.0
            await _until(lambda: relay.given == [queue_id] and not manager.busy)
        assert _queued(site_a) == []

    asyncio.run(scenario())
