"""The delivery journal: a next hop's 250 noted at once, and recorded after a crash.

Real files in a temporary directory; for the queue manager a real store and GroupWriter, the
network transport a fake that counts what it is given.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select

from sitemail.admin.service import AdminService
from sitemail.config.model import QueueConfig
from sitemail.core.clock import ManualClock
from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.queue.content import Content
from sitemail.queue.journal import DeliveryJournal
from sitemail.queue.manager import QueueManager
from sitemail.queue.model import (
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    QueueId,
    RecipientResult,
)
from sitemail.queue.records import NewMessage, insert_messages
from sitemail.routing.route import Route, Transport
from sitemail.store.tables import queue_rcpt, track_event
from sitemail.store.writer import GroupWriter


def _delivered(rcpt_id: int) -> RecipientResult:
    return RecipientResult(rcpt_id, Outcome.DELIVERED, 250, "2.0.0", "Ok: queued as X", "mx.test")


def test_journal_noted_deliveries_come_back_after_a_crash(tmp_path: Path) -> None:
    """What one run noted (deliveries only), the next run's `pending` gives back, by message."""
    first = DeliveryJournal(tmp_path)
    deferred = RecipientResult(3, Outcome.DEFERRED, 451, "4.4.1", "later")
    first.note("Q1", [_delivered(1), _delivered(2), deferred])
    first.note("Q2", [_delivered(7)])
    # kill -9: nothing is closed or flushed by the process
    pending = DeliveryJournal(tmp_path).pending()
    assert pending == {"Q1": [_delivered(1), _delivered(2)], "Q2": [_delivered(7)]}


def test_journal_line_cut_by_a_crash_is_skipped(tmp_path: Path) -> None:
    """A torn last line is left out; the whole lines before it count."""
    journal = DeliveryJournal(tmp_path)
    journal.note("Q1", [_delivered(1)])
    journal.close()
    (path,) = tmp_path.glob("*.log")
    with path.open("ab") as out:
        out.write(b'{"q": "Q2", "r": 5, "c"')
    assert DeliveryJournal(tmp_path).pending() == {"Q1": [_delivered(1)]}


def test_journal_files_go_once_done_and_written_no_more(tmp_path: Path) -> None:
    """After rotation a file whose notes are all done is removed; the current one stays."""
    journal = DeliveryJournal(tmp_path, rotate_bytes=1)
    old = journal.note("Q1", [_delivered(1)])
    new = journal.note("Q2", [_delivered(2)])  # over the size: a new file
    assert len(list(tmp_path.glob("*.log"))) == 2
    journal.done(old)
    assert [p.name for p in tmp_path.glob("*.log")] == [f"{new}.log"]
    journal.done(new)
    assert [p.name for p in tmp_path.glob("*.log")] == [f"{new}.log"]
    journal.clear()
    assert list(tmp_path.glob("*.log")) == []


def test_journal_that_cannot_be_written_does_not_stop_the_record(tmp_path: Path) -> None:
    """A journal that cannot be written (here: its directory is a file) says so and goes on:
    the database record that follows is what counts then."""
    blocked = tmp_path / "journal"
    blocked.write_bytes(b"")
    journal = DeliveryJournal(blocked)
    token = journal.note("Q1", [_delivered(1)])
    journal.done(token)
    assert token == -1


class CountingRelay:
    def __init__(self) -> None:
        self.calls = 0
        self.given: list[str] = []

    async def deliver(
        self,
        message: QueuedMessage,
        content: bytes,
        recipients: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        del message, content
        self.calls += 1
        self.given += [r.recipient.address for r, _ in recipients]
        return [_delivered(r.id) for r, _ in recipients]


def test_manager_records_a_noted_delivery_before_sending_anything(
    site_a: AdminService, tmp_path: Path
) -> None:
    """A message whose 250 the journal holds, but the database not: recorded at start, with
    its tracking event, and never handed to the transport again; the old notes are removed."""
    envelope = Envelope(
        "alice@sitea.example.com",
        (EnvelopeRecipient("bob@one.test"), EnvelopeRecipient("carol@one.test")),
    )
    with site_a.store.write() as conn:
        [(_, rcpts)] = insert_messages(
            conn,
            [(QueueId("Q1"), NewMessage(envelope, Content.of(b"Subject: x\r\n\r\nhi\r\n")))],
            1.0,
            "SiteA",
        )
    DeliveryJournal(tmp_path).note("Q1", [_delivered(rcpts[0].id)])  # then the crash
    relay = CountingRelay()

    def queued() -> bool:
        with site_a.store.read() as conn:
            return bool(conn.execute(select(queue_rcpt)).all())

    async def scenario() -> None:
        writer = GroupWriter(site_a.store)
        manager = QueueManager(
            site_a.store,
            ManualClock(),
            site="SiteA",
            reporting_mta="servera.sitea.example.com",
            settings=QueueConfig(),
            router=lambda address, trace: Route(Transport.RELAY, "one.test", address),
            agents={Transport.RELAY: relay},
            writer=writer,
            journal=DeliveryJournal(tmp_path),
        )
        await writer.start()
        task = asyncio.create_task(manager.run())
        try:
            async with asyncio.timeout(10):
                while relay.calls == 0 or await asyncio.to_thread(queued):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await writer.stop()

    asyncio.run(scenario())
    assert relay.given == ["carol@one.test"]  # bob's delivery was recorded from the journal
    with site_a.store.read() as conn:
        relayed = conn.execute(
            select(track_event.c.recipient).where(track_event.c.event == "relayed")
        ).scalars()
        assert sorted(relayed) == ["bob@one.test", "carol@one.test"]
        assert conn.execute(select(queue_rcpt)).all() == []
    # the old note is gone; the journal holds this run's note of carol only
    assert DeliveryJournal(tmp_path).pending() == {"Q1": [_delivered(rcpts[1].id)]}
