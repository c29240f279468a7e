"""Resends from sibling sites: recognised in the transaction that would store them.

A real store (SiteA's data dir) and, for the spool, a real GroupWriter; no transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import func, select

from sitemail.admin.service import AdminService
from sitemail.core.clock import ManualClock
from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.queue.content import Content
from sitemail.queue.dedupe import forget_older, remember, screen
from sitemail.queue.model import QueueId
from sitemail.queue.records import NewMessage, insert_messages
from sitemail.queue.spool import Spool
from sitemail.routing.trace import Origin
from sitemail.store.tables import queue_message, relay_seen, track_event
from sitemail.store.writer import GroupWriter

FROM_B = Origin("SiteB", "0190000000AAAAAAAA")


def _message(*recipients: str, origin: Origin | None = FROM_B) -> NewMessage:
    envelope = Envelope("bob@siteb.example.com", tuple(EnvelopeRecipient(r) for r in recipients))
    return NewMessage(envelope, Content.of(b"Message-ID: <m1@siteb>\r\n\r\nhi\r\n"), origin=origin)


def _store(site: AdminService, queue_id: str, message: NewMessage, now: float = 100.0) -> None:
    """What the spool's transaction does: screen, insert, remember."""
    with site.store.write() as conn:
        screened = screen(conn, [(QueueId(queue_id), message)], now=now, site="SiteA")
        insert_messages(conn, screened.fresh, now, "SiteA")
        remember(conn, screened.fresh, now)


def _addresses(message: NewMessage) -> list[str]:
    return [r.address for r in message.envelope.recipients]


def test_dedupe_same_origin_and_recipient_again_is_a_duplicate(site_a: AdminService) -> None:
    """A message stored with an origin, then the same origin again: left out, first id named."""
    _store(site_a, "Q1", _message("alice@sitea.example.com"))
    with site_a.store.write() as conn:
        again = screen(
            conn, [(QueueId("Q2"), _message("ALICE@sitea.example.com"))], now=101.0, site="SiteA"
        )
        events = conn.execute(select(track_event).where(track_event.c.event == "duplicate")).all()
    assert again.fresh == []
    assert again.duplicates == {"Q2": "Q1"}
    assert [(e.queue_id, e.recipient, e.message_id) for e in events] == [
        ("Q1", "alice@sitea.example.com", "<m1@siteb>")
    ]


def test_dedupe_partial_resend_keeps_only_the_new_recipients(site_a: AdminService) -> None:
    """Some recipients accepted before, some new: the new ones are stored, the others not."""
    _store(site_a, "Q1", _message("alice@sitea.example.com"))
    with site_a.store.write() as conn:
        again = screen(
            conn,
            [(QueueId("Q2"), _message("alice@sitea.example.com", "carol@sitea.example.com"))],
            now=101.0,
            site="SiteA",
        )
    assert again.duplicates == {}
    [(queue_id, kept)] = again.fresh
    assert (queue_id, _addresses(kept)) == ("Q2", ["carol@sitea.example.com"])


def test_dedupe_other_origin_or_none_is_never_a_duplicate(site_a: AdminService) -> None:
    """Another queue id, another site or no proven origin: stored as it is."""
    _store(site_a, "Q1", _message("alice@sitea.example.com"))
    others = [
        (QueueId("Q2"), _message("alice@sitea.example.com", origin=Origin("SiteB", "OTHER"))),
        (
            QueueId("Q3"),
            _message("alice@sitea.example.com", origin=Origin("SiteC", FROM_B.queue_id)),
        ),
        (QueueId("Q4"), _message("alice@sitea.example.com", origin=None)),
        (QueueId("Q5"), _message("alice@sitea.example.com", origin=None)),
    ]
    with site_a.store.write() as conn:
        screened = screen(conn, others, now=101.0, site="SiteA")
    assert [q for q, _ in screened.fresh] == ["Q2", "Q3", "Q4", "Q5"]
    assert screened.duplicates == {}


def test_dedupe_two_copies_in_one_transaction_store_one(site_a: AdminService) -> None:
    """Two copies in one batch (a resend racing the first copy's commit): the second is out."""
    batch = [
        (QueueId("Q1"), _message("alice@sitea.example.com")),
        (QueueId("Q2"), _message("alice@sitea.example.com")),
    ]
    with site_a.store.write() as conn:
        screened = screen(conn, batch, now=100.0, site="SiteA")
    assert [q for q, _ in screened.fresh] == ["Q1"]
    assert screened.duplicates == {"Q2": "Q1"}


def test_dedupe_forget_older_purges_old_records_only_and_a_bounded_number(
    site_a: AdminService,
) -> None:
    """Records older than the cut go, at most a batch per call; newer ones stay."""
    many = _message(*(f"u{i}@sitea.example.com" for i in range(1500)))
    _store(site_a, "Q1", many, now=10.0)
    _store(site_a, "Q2", _message("new@sitea.example.com", origin=Origin("SiteB", "NEW")), now=50.0)
    with site_a.store.write() as conn:
        first, second, third = (forget_older(conn, before=20.0) for _ in range(3))
        left = conn.execute(select(relay_seen.c.origin_id)).scalars().all()
    assert (first, second, third) == (1000, 500, 0)
    assert left == ["NEW"]


@asynccontextmanager
async def _spool(site: AdminService, clock: ManualClock, **options: float) -> AsyncIterator[Spool]:
    writer = GroupWriter(site.store)
    spool = Spool(site.store, clock, "SiteA", writer=writer, **options)
    await writer.start()
    try:
        yield spool
    finally:
        await spool.stop()
        await writer.stop()


def test_spool_resend_is_answered_with_the_first_copys_queue_id(site_a: AdminService) -> None:
    """Through the spool: the resend gets the first queue id, and one message is queued."""

    async def scenario() -> tuple[QueueId, QueueId]:
        async with _spool(site_a, ManualClock()) as spool:
            first = await spool.enqueue(_message("alice@sitea.example.com"))
            return first, await spool.enqueue(_message("alice@sitea.example.com"))

    first, again = asyncio.run(scenario())
    assert again == first
    with site_a.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(queue_message)).scalar_one() == 1


def test_spool_forgets_origins_after_the_retention(site_a: AdminService) -> None:
    """Past `dedupe_retention` the record is purged, so the same origin is stored again."""

    async def scenario() -> tuple[QueueId, QueueId]:
        clock = ManualClock()
        async with _spool(site_a, clock, dedupe_retention=3600.0) as spool:
            first = await spool.enqueue(_message("alice@sitea.example.com"))
            clock.advance(3601.0)
            await spool.enqueue(_message("carol@sitea.example.com", origin=None))  # purges
            return first, await spool.enqueue(_message("alice@sitea.example.com"))

    first, again = asyncio.run(scenario())
    assert again != first
