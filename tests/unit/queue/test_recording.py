"""The queue manager records a next hop's acceptance as soon as it answers.

A real store and GroupWriter; the only fake is the network transport, which accepts
everything and holds the deliveries to one next hop until told (events, not timing). The
writer's linger is made very long, so a record that waited for company would not be
committed within the test's time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from sqlalchemy import select

from sitemail.admin.service import AdminService
from sitemail.config.model import QueueConfig
from sitemail.core.clock import ManualClock
from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.queue.content import Content
from sitemail.queue.manager import QueueManager
from sitemail.queue.model import (
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    RecipientResult,
)
from sitemail.queue.records import NewMessage
from sitemail.queue.spool import Spool
from sitemail.routing.route import Route, Transport
from sitemail.store.tables import queue_rcpt
from sitemail.store.writer import GroupWriter

_LONG_LINGER = 60.0


def _by_domain(address: str, trace: Mapping[str, float]) -> Route:
    """Each recipient domain is its own next hop."""
    del trace
    return Route(Transport.RELAY, address.rpartition("@")[2], address)


class HeldRelay:
    """Accepts every recipient; deliveries to `held` next hops wait for `release`."""

    def __init__(self, held: str = "") -> None:
        self.held = held
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def deliver(
        self,
        message: QueuedMessage,
        content: bytes,
        recipients: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        del message, content
        if recipients[0][1].nexthop == self.held:
            self.waiting.set()
            await self.release.wait()
        return [RecipientResult(r.id, Outcome.DELIVERED, 250, "2.0.0", "ok") for r, _ in recipients]


@asynccontextmanager
async def _running(site: AdminService, relay: HeldRelay) -> AsyncIterator[Spool]:
    writer = GroupWriter(site.store, linger=_LONG_LINGER)
    manager = QueueManager(
        site.store,
        ManualClock(),
        site="SiteA",
        reporting_mta="servera.sitea.example.com",
        settings=QueueConfig(),
        router=_by_domain,
        agents={Transport.RELAY: relay},
        writer=writer,
    )
    spool = Spool(site.store, ManualClock(), "SiteA", writer=writer, handoff=manager)
    await writer.start()
    task = asyncio.create_task(manager.run())
    try:
        yield spool
    finally:
        relay.release.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await spool.stop()
        await writer.stop()


def _states(site: AdminService) -> dict[str, str]:
    with site.store.read() as conn:
        rows = conn.execute(select(queue_rcpt.c.address, queue_rcpt.c.state)).all()
    return {r.address: r.state for r in rows}


async def _until(check: Callable[[], bool], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not await asyncio.to_thread(check):  # noqa: ASYNC110 - the state is in the database
            await asyncio.sleep(0.01)


def _message(*recipients: str) -> NewMessage:
    envelope = Envelope("alice@sitea.example.com", tuple(EnvelopeRecipient(r) for r in recipients))
    return NewMessage(envelope, Content.of(b"Message-ID: <r1@sitea>\r\n\r\nhi\r\n"))


def test_manager_records_a_relayed_message_without_waiting_for_company(
    site_a: AdminService,
) -> None:
    """The record of an accepted relay commits at once, not after the writer's linger."""

    async def scenario() -> None:
        async with _running(site_a, HeldRelay()) as spool:
            await spool.enqueue(_message("bob@one.test"))
            await _until(lambda: not _states(site_a))  # recorded and closed

    asyncio.run(scenario())


def test_manager_records_each_next_hop_as_it_answers(site_a: AdminService) -> None:
    """A hop that answered is committed while the message's other hop is still in flight."""

    async def scenario() -> None:
        relay = HeldRelay(held="slow.test")
        async with _running(site_a, relay) as spool:
            await spool.enqueue(_message("bob@fast.test", "carol@slow.test"))
            await relay.waiting.wait()
            await _until(lambda: _states(site_a).get("bob@fast.test") == "delivered")
            assert _states(site_a)["carol@slow.test"] == "queued"
            relay.release.set()
            await _until(lambda: not _states(site_a))

    asyncio.run(scenario())
