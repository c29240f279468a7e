"""The replication transport hands what it queues to the queue manager, claimed before commit.

A recording `Handoff` stands in for the queue manager (the logic under test is the order of
claim, commit and hand-off); the store, the writer and both sites' replicators are real.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from sqlalchemy import Connection, select

from sitemail.admin.service import AdminService
from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.core.errors import StoreError
from sitemail.queue.content import Content
from sitemail.queue.model import Outcome, QueuedMessage, QueuedRecipient, QueueId, RecipientResult
from sitemail.queue.records import NewMessage, insert_messages, new_queue_id
from sitemail.queue.spool import New
from sitemail.replication.agent import ReplicationAgent
from sitemail.replication.replicator import Replicator
from sitemail.routing.route import Route, Transport
from sitemail.store.engine import Store
from sitemail.store.tables import queue_message
from sitemail.store.writer import GroupWriter

from .test_replicator import pair, take_queued


class RecordingHandoff:
    """Records what the agent asks of the queue manager, and checks each hand-off is of a
    message already committed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.claimed: set[str] = set()
        self.events: list[tuple[str, str]] = []

    def claim(self, queue_id: QueueId) -> None:
        self.claimed.add(queue_id)
        self.events.append(("claim", queue_id))

    def unclaim(self, queue_id: QueueId, *, wake: bool = True) -> None:
        self.claimed.discard(queue_id)
        self.events.append(("unclaim", queue_id))

    def deliver_in(self, conn: Connection, batch: Sequence[New]) -> dict[str, bool]:
        return {}  # nothing local: every message goes to a network transport

    def hand_off(
        self, message: QueuedMessage, content: Content, recipients: Sequence[QueuedRecipient]
    ) -> None:
        assert message.queue_id in self.claimed, "handed off without a claim"
        with self.store.read() as conn:
            committed = conn.execute(
                select(queue_message.c.content).where(queue_message.c.queue_id == message.queue_id)
            ).scalar()
        assert committed == content.whole(), "handed off before its commit"
        self.claimed.discard(message.queue_id)  # the manager's now, until it is delivered
        self.events.append(("hand_off", message.queue_id))


def with_agent(
    replicator: Replicator,
    store: Store,
    handoff: RecordingHandoff,
    action: Callable[[ReplicationAgent], Awaitable[object]],
) -> None:
    """Run `action` on a replication transport with a real group writer and `handoff`."""

    async def run() -> None:
        writer = GroupWriter(store)
        await writer.start()
        try:
            agent = ReplicationAgent(
                replicator, on_enqueued=lambda: None, submit=writer.submit, handoff=handoff
            )
            await action(agent)
        finally:
            await writer.stop()

    asyncio.run(run())


def test_agent_hands_the_answer_it_queues_to_the_manager(tmp_path: Path) -> None:
    """A request delivered to SiteA's directory-service mailbox is answered; the answer is
    claimed before the commit and handed over after it, and the spare claim is released."""
    a, ra, b, _ = pair(tmp_path, batch=512)
    message, request, members = queued_request(a, ra, b)
    handoff = RecordingHandoff(a.store)

    with_agent(ra, a.store, handoff, lambda agent: agent.deliver(message, request, members))
    handed = [queue_id for event, queue_id in handoff.events if event == "hand_off"]
    assert len(handed) == 1  # the answer
    claims = [queue_id for event, queue_id in handoff.events if event == "claim"]
    assert handed[0] in claims
    assert handoff.claimed == set(), "every claim is handed off or released"
    with a.store.read() as conn:
        queued = conn.execute(select(queue_message.c.queue_id)).scalars().all()
    assert handed[0] in queued  # the answer
    assert message.queue_id not in queued  # the request: delivered and dequeued


def test_agent_releases_its_claims_when_the_step_fails(tmp_path: Path) -> None:
    """A step that fails (rolled back) hands nothing over and keeps no claim: a pass finds
    the message to the mailbox again, and nothing it would have queued exists."""
    a, ra, _, _ = pair(tmp_path, batch=512)
    handoff = RecordingHandoff(a.store)

    def broken(conn: Connection) -> None:
        ra.ping(conn, "SiteB")  # queues a message under a claimed id...
        raise RuntimeError("disk full")  # ...and the transaction rolls back

    with pytest.raises(RuntimeError):
        with_agent(ra, a.store, handoff, lambda agent: agent._step(broken))
    events = [event for event, _ in handoff.events]
    claims = events.count("claim")
    assert claims >= 1
    assert events == ["claim"] * claims + ["unclaim"] * claims  # claimed first, then released
    assert handoff.claimed == set()
    with a.store.read() as conn:
        assert conn.execute(select(queue_message.c.queue_id)).scalars().all() == []


def queued_request(
    a: AdminService, ra: Replicator, b: AdminService
) -> tuple[QueuedMessage, Content, list[tuple[QueuedRecipient, Route]]]:
    """B's request, queued at A for A's directory-service mailbox."""
    b.replication.request_now("SiteA")
    [request] = take_queued(b)
    to = "sitemail-dsa@sitea.example.com"
    with a.store.write() as conn:
        [(message, recipients)] = insert_messages(
            conn,
            [
                (
                    new_queue_id(0),
                    NewMessage(Envelope("", (EnvelopeRecipient(to),)), Content.of(request)),
                )
            ],
            ra.clock.now(),
            "SiteA",
        )
    route = Route(Transport.REPLICATION, "", to)
    return message, Content.of(request), [(r, route) for r in recipients]


def test_agent_drops_and_counts_a_message_whose_processing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault the message triggers (not the store's) does not defer it into retries and
    notices: it is delivered (consumed), counted as unprocessable and logged once."""
    a, ra, b, _ = pair(tmp_path, batch=512)
    message, request, members = queued_request(a, ra, b)

    def fault(*_args: object, **_kwargs: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(ra, "receive", fault)
    results: list[list[RecipientResult]] = []

    async def deliver(agent: ReplicationAgent) -> None:
        results.append(await agent.deliver(message, request, members))

    with_agent(ra, a.store, RecordingHandoff(a.store), deliver)
    assert [r.outcome for r in results[0]] == [Outcome.DELIVERED]
    assert "unprocessable" in results[0][0].text
    assert a.replication.status().rejected == {"unprocessable": 1}
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(" origin")[0] for r in logged] == [
        "replication message refused: reason=unprocessable"
    ]
    assert logged[0].exc_info is not None
    with a.store.read() as conn:
        assert conn.execute(select(queue_message.c.queue_id)).scalars().all() == []


def test_agent_defers_a_message_when_the_store_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store fault is not the message's: it propagates (the queue defers and retries)."""
    a, ra, b, _ = pair(tmp_path, batch=512)
    message, request, members = queued_request(a, ra, b)

    def fault(*_args: object, **_kwargs: object) -> None:
        raise StoreError("database is locked")

    monkeypatch.setattr(ra, "receive", fault)
    with pytest.raises(StoreError):
        with_agent(
            ra,
            a.store,
            RecordingHandoff(a.store),
            lambda agent: agent.deliver(message, request, members),
        )
    assert a.replication.status().rejected == {}
