"""The spool's hand-off: local mail is delivered with its acceptance, other mail goes to the
queue manager in memory once committed, and nothing is ever started twice.

A real store (SiteA's data dir) and GroupWriter, a real Spool and QueueManager; the only fakes
are the transports: a relay that records what it is given and may be held in the middle of a
delivery (so each interleaving of a hand-off and a pass over the database is forced by events,
not by timing), and a transactional "local" one that records and may fail.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import Connection

from sitemail.admin.service import AdminService
from sitemail.config.model import QueueConfig
from sitemail.core.clock import ManualClock
from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.queue.content import Content
from sitemail.queue.manager import QueueManager
from sitemail.queue.model import (
    Delivery,
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    QueueId,
    RecipientResult,
)
from sitemail.queue.records import NewMessage, insert_message, load_messages
from sitemail.queue.spool import Spool
from sitemail.routing.route import Route, Transport
from sitemail.store.writer import GroupWriter


def _relay(address: str, trace: Mapping[str, float]) -> Route:
    """Addresses at local.test are local; the rest go to a relay host."""
    del trace
    if address.endswith("@local.test"):
        return Route(Transport.LOCAL, "", address)
    return Route(Transport.RELAY, "relay.test", address)


class RecordingLocal:
    """A transactional transport: delivers in the caller's transaction; `failures` makes
    that many calls raise first."""

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.failures = 0

    async def deliver(
        self,
        message: QueuedMessage,
        content: Content,
        recipients: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        raise AssertionError("a transactional transport is only called in a transaction")

    def deliver_in(
        self, conn: Connection, batch: Sequence[Delivery]
    ) -> list[list[RecipientResult]]:
        del conn
        if self.failures:
            self.failures -= 1
            raise RuntimeError("mailbox store broken")
        self.delivered.extend(d.message.queue_id for d in batch)
        return [
            [
                RecipientResult(r.id, Outcome.DELIVERED, 250, "2.0.0", "stored")
                for r, _ in d.recipients
            ]
            for d in batch
        ]


class RecordingRelay:
    """A relay transport that delivers everything; `hold` keeps deliveries waiting."""

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.started = asyncio.Event()
        self.hold: asyncio.Event | None = None

    async def deliver(
        self,
        message: QueuedMessage,
        content: Content,
        recipients: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        del content
        self.started.set()
        if self.hold is not None:
            await self.hold.wait()
        self.delivered.append(message.queue_id)
        return [RecipientResult(r.id, Outcome.DELIVERED, 250, "2.0.0", "ok") for r, _ in recipients]


class WatchedManager(QueueManager):
    """Records what each pass over the database found; the first pass may be held, in its
    thread, just before and just after it reads (`first_pass`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.found_by_passes: list[str] = []
        self.passes = 0
        self.first_pass: _Gates | None = None

    def _due_plans(self, now: float, running: frozenset[str], room: int) -> Any:
        self.passes += 1
        gates = self.first_pass if self.passes == 1 else None
        if gates is not None:
            gates.started.set()
            gates.read.wait(10)
        ids, plans = super()._due_plans(now, running, room)
        self.found_by_passes.extend(ids)
        if gates is not None:
            gates.has_read.set()
            gates.give_back.wait(10)
        return ids, plans


class _Gates:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.read = threading.Event()
        self.has_read = threading.Event()
        self.give_back = threading.Event()


def _message(number: int, *domains: str) -> NewMessage:
    recipients = tuple(EnvelopeRecipient(f"r{number}@{d}") for d in domains or ["remote.test"])
    envelope = Envelope("alice@sitea.example.com", recipients)
    content = f"Message-ID: <m{number}@sitea>\r\n\r\nbody {number}\r\n".encode()
    return NewMessage(envelope, Content.of(content))


def _queued(site: AdminService) -> list[str]:
    with site.store.read() as conn:
        return [
            m.queue_id
            for m, _, _ in load_messages(conn, [e.queue_id for e in site.queue.entries()])
        ]


@asynccontextmanager
async def _running(
    site: AdminService,
    relay: RecordingRelay,
    *,
    serve: bool = True,
    local: RecordingLocal | None = None,
) -> AsyncIterator[tuple[Spool, WatchedManager]]:
    """A writer, a manager (running its loop when `serve`) and a spool handing off to it."""
    writer = GroupWriter(site.store)
    manager = WatchedManager(
        site.store,
        ManualClock(),
        site="SiteA",
        reporting_mta="servera.sitea.example.com",
        settings=QueueConfig(),
        router=_relay,
        agents={Transport.RELAY: relay, Transport.LOCAL: local or RecordingLocal()},
        writer=writer,
    )
    spool = Spool(site.store, ManualClock(), "SiteA", writer=writer, handoff=manager)
    await writer.start()
    task = asyncio.create_task(manager.run()) if serve else None
    try:
        yield spool, manager
    finally:
        if task is not None:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await spool.stop()
        await writer.stop()


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not check():  # noqa: ASYNC110 - the conditions live in other objects
            await asyncio.sleep(0.001)


def test_committed_messages_are_handed_off_and_delivered_once_each(site_a: AdminService) -> None:
    async def scenario() -> None:
        relay = RecordingRelay()
        async with _running(site_a, relay) as (spool, manager):
            await _until(lambda: not manager.busy)  # the start-up pass is over
            queue_ids = [await spool.enqueue(_message(n)) for n in range(3)]
            await _until(lambda: len(relay.delivered) == 3 and not manager.busy)
        # Each once, in order. (The start-up pass may have read one of them while it was
        # being handed off; it leaves claimed and finished messages alone.)
        assert relay.delivered == queue_ids

    asyncio.run(scenario())
    assert _queued(site_a) == []


def test_a_pass_that_read_before_a_hand_off_finished_does_not_start_it_again(
    site_a: AdminService,
) -> None:
    """The worst interleaving: a pass starts before the message is claimed, reads it while
    its handed-off delivery is in flight, and returns after that delivery was recorded."""

    async def scenario() -> None:
        relay = RecordingRelay()
        relay.hold = asyncio.Event()
        gates = _Gates()
        async with _running(site_a, relay, serve=False) as (spool, manager):
            manager.first_pass = gates
            task = asyncio.create_task(manager.run())
            await asyncio.to_thread(gates.started.wait, 10)
            queue_id = await spool.enqueue(_message(1))  # claimed, committed, handed off
            await relay.started.wait()
            gates.read.set()
            await asyncio.to_thread(gates.has_read.wait, 10)
            assert manager.found_by_passes == [queue_id]  # the pass saw it, still queued
            relay.hold.set()
            await _until(lambda: relay.delivered == [queue_id] and not manager.busy)
            gates.give_back.set()
            await _until(lambda: manager.passes >= 2 and not manager.busy)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert relay.delivered == [queue_id]

    asyncio.run(scenario())


def test_hand_off_before_the_manager_runs_is_left_to_a_pass(site_a: AdminService) -> None:
    async def scenario() -> None:
        relay = RecordingRelay()
        async with _running(site_a, relay, serve=False) as (spool, manager):
            queue_id = await spool.enqueue(_message(1))
            assert not manager.busy  # declined: the claim is dropped
            assert relay.delivered == []
            assert await manager.run_once() == 1
        assert relay.delivered == [queue_id]
        assert manager.found_by_passes == [queue_id]

    asyncio.run(scenario())


class FailingWriter(GroupWriter):
    async def submit(self, job: Callable[[Connection], Any]) -> Any:
        del job
        raise OSError("disk full")


def test_a_failed_commit_drops_the_claim(site_a: AdminService) -> None:
    async def scenario() -> None:
        relay = RecordingRelay()
        manager = QueueManager(
            site_a.store,
            ManualClock(),
            site="SiteA",
            reporting_mta="servera.sitea.example.com",
            settings=QueueConfig(),
            router=_relay,
            agents={Transport.RELAY: relay},
        )
        spool = Spool(
            site_a.store,
            ManualClock(),
            "SiteA",
            writer=FailingWriter(site_a.store),
            handoff=manager,
        )
        with pytest.raises(OSError, match="disk full"):
            await spool.enqueue(_message(1))
        assert not manager.busy
        assert relay.delivered == []

    asyncio.run(scenario())


def test_local_mail_is_in_the_mailbox_when_its_acceptance_returns(site_a: AdminService) -> None:
    async def scenario() -> None:
        relay, local = RecordingRelay(), RecordingLocal()
        async with _running(site_a, relay, local=local) as (spool, manager):
            await _until(lambda: not manager.busy)
            queue_id = await spool.enqueue(_message(1, "local.test", "local.test"))
            assert local.delivered == [queue_id]  # one commit accepted and delivered it
            assert _queued(site_a) == []
            assert not manager.busy
        assert queue_id not in manager.found_by_passes
        assert relay.delivered == []

    asyncio.run(scenario())


def test_a_failing_delivery_with_acceptance_still_accepts_and_hands_off(
    site_a: AdminService,
) -> None:
    """The savepoint: the message is accepted all the same and delivered the usual way."""

    async def scenario() -> None:
        relay, local = RecordingRelay(), RecordingLocal()
        local.failures = 1
        async with _running(site_a, relay, local=local) as (spool, manager):
            await _until(lambda: not manager.busy)
            queue_id = await spool.enqueue(_message(1, "local.test"))
            await _until(lambda: local.delivered == [queue_id] and not manager.busy)
        assert _queued(site_a) == []

    asyncio.run(scenario())


def test_mixed_local_and_remote_mail_is_handed_off_whole(site_a: AdminService) -> None:
    async def scenario() -> None:
        relay, local = RecordingRelay(), RecordingLocal()
        async with _running(site_a, relay, local=local) as (spool, manager):
            await _until(lambda: not manager.busy)
            queue_id = await spool.enqueue(_message(1, "local.test", "remote.test"))
            await _until(lambda: relay.delivered == [queue_id] and not manager.busy)
            assert local.delivered == [queue_id]
        assert relay.delivered == [queue_id]  # once
        assert _queued(site_a) == []

    asyncio.run(scenario())


def test_a_pass_does_not_restart_what_run_once_finished_while_it_read(
    site_a: AdminService,
) -> None:
    """run_once (tests, `queue retry`) and the loop's pass may read at the same time."""

    async def scenario() -> None:
        relay = RecordingRelay()
        relay.hold = asyncio.Event()
        gates = _Gates()
        async with _running(site_a, relay, serve=False) as (_, manager):
            manager.first_pass = gates
            task = asyncio.create_task(manager.run())
            await asyncio.to_thread(gates.started.wait, 10)  # the loop's pass, held
            with site_a.store.write() as conn:  # queued behind the spool's back, so no claim
                insert_message(conn, QueueId("X1"), _message(1), ManualClock().now(), "SiteA")
            once = asyncio.create_task(manager.run_once())
            await relay.started.wait()  # run_once is delivering it
            gates.read.set()
            await asyncio.to_thread(gates.has_read.wait, 10)
            relay.hold.set()
            assert await once == 1
            gates.give_back.set()
            await _until(lambda: manager.passes >= 3 and not manager.busy)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert relay.delivered == ["X1"]

    asyncio.run(scenario())
