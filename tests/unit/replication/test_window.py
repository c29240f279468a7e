"""Windows of answers: composed together, chained, and taken in order whatever order they come in.

Two sites' Replicators exchange queued messages by hand (as in test_replicator.py); the
out-of-order case goes through the real ReplicationAgent, which holds an answer back until the
one before it has been taken.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, select

from sitemail.admin.service import AdminService
from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.directory import ObjectKind
from sitemail.queue.model import QueuedMessage, QueuedRecipient, QueueId
from sitemail.replication import state
from sitemail.replication.agent import ReplicationAgent
from sitemail.replication.replicator import WINDOW, Replicator
from sitemail.routing.route import Route, Transport
from sitemail.store.tables import queue_message


def make(root: Path, name: str) -> AdminService:
    return AdminService.init(
        root / name,
        org="ExchangeORG",
        site=name,
        server=f"Server{name[-1]}",
        domain=f"{name.lower()}.example.com",
        listen=["127.0.0.1"],
    )


def take_queued(service: AdminService) -> list[bytes]:
    """What the site queued (oldest first), removed from its queue as if sent."""
    with service.store.write() as conn:
        rows = conn.execute(select(queue_message).order_by(queue_message.c.received_at)).all()
        conn.execute(delete(queue_message))
    return [bytes(r.content) for r in rows]


def pair(tmp_path: Path, batch: int) -> tuple[AdminService, Replicator, AdminService, Replicator]:
    a, b = make(tmp_path, "SiteA"), make(tmp_path, "SiteB")
    for here, there in ((a, b), (b, a)):
        name = there.org().local_site
        here.replication.add_connector(
            name,
            bridgehead=f"Server{name[-1]}",
            routing_address=f"{name.lower()}.example.com",
            peer_key=there.site_key()[0],
            schedule="never",
        )
    ra, rb = a.replication.replicator(), b.replication.replicator()
    ra.batch = rb.batch = batch
    return a, ra, b, rb


def _answers(b: AdminService, a: AdminService, ra: Replicator, rb: Replicator) -> list[bytes]:
    """B's queued request(s) served by A; A's answers, in the order A queued them."""
    for request in take_queued(b):
        with a.store.write() as conn:
            ra.receive(conn, request)
    return take_queued(a)


def test_a_request_is_answered_by_a_window_of_chained_answers(tmp_path: Path) -> None:
    a, ra, b, rb = pair(tmp_path, batch=2)
    for i in range(20):
        a.add_recipient(ObjectKind.MAILBOX, f"u{i}", display_name=f"U {i}")
    b.replication.request_now("SiteA")
    window = [rb.verify(raw) for raw in _answers(b, a, ra, rb)]
    assert len(window) == WINDOW  # 2 objects each: more than a window's worth is held
    seqs = [m.seq for m in window]
    assert seqs == list(range(seqs[0], seqs[0] + WINDOW))  # consecutive: one transaction
    for number, message in enumerate(window):
        assert message.body["window"]["part"] == number
        assert message.body["window"]["parts"] == WINDOW
        assert message.body["window"]["more"] is True
        assert message.body["more"] is True
    for before, after in itertools.pairwise(window):  # each goes on from the last
        assert after.body["ncs"]["SiteA"]["from"] == before.body["ncs"]["SiteA"]["to"]
    assert window[0].body["window"]["next"]["SiteA"] == window[-1].body["ncs"]["SiteA"]["to"]


def test_an_answer_is_in_turn_only_after_the_one_before_it(tmp_path: Path) -> None:
    a, ra, b, rb = pair(tmp_path, batch=2)
    for i in range(5):
        a.add_recipient(ObjectKind.MAILBOX, f"u{i}", display_name=f"U {i}")
    b.replication.request_now("SiteA")
    raws = _answers(b, a, ra, rb)
    first, second = rb.verify(raws[0]), rb.verify(raws[1])
    assert rb.in_turn(first)
    assert not rb.in_turn(second)
    with b.store.write() as conn:
        rb.receive(conn, raws[0], verified=first)
    assert rb.in_turn(second)


def _agent(service: AdminService, replicator: Replicator) -> ReplicationAgent:
    async def submit(job: Callable[[Connection], Any]) -> Any:
        return await asyncio.to_thread(_write, service, job)

    return ReplicationAgent(replicator, on_enqueued=lambda: None, submit=submit)


def _write(service: AdminService, job: Callable[[Connection], Any]) -> Any:
    with service.store.write() as conn:
        return job(conn)


def _delivery(number: int, raw: bytes) -> tuple[QueuedMessage, list[tuple[QueuedRecipient, Route]]]:
    queue_id = QueueId(f"Q{number}")
    to = EnvelopeRecipient("sitemail-dsa@siteb.example.com")
    message = QueuedMessage(queue_id, Envelope("", (to,)), 0.0, len(raw), "", False)
    rcpt = QueuedRecipient(number, queue_id, to, 0, None, False)
    return message, [(rcpt, Route(Transport.REPLICATION, "", to.address))]


def test_a_window_delivered_backwards_is_taken_in_order(tmp_path: Path) -> None:
    """Every answer of each window arrives last-first; all are taken, none as a replay."""
    a, ra, b, rb = pair(tmp_path, batch=2)
    for i in range(25):
        a.add_recipient(ObjectKind.MAILBOX, f"u{i}", display_name=f"U {i}")
    agent = _agent(b, rb)
    b.replication.request_now("SiteA")

    async def deliver(number: int, raw: bytes) -> None:
        message, recipients = _delivery(number, raw)
        await agent.deliver(message, raw, recipients)

    async def exchange() -> int:
        windows = 0
        while answers := _answers(b, a, ra, rb):
            windows += 1
            tasks = []
            for number, raw in reversed(list(enumerate(answers))):
                tasks.append(asyncio.create_task(deliver(number, raw)))
                await asyncio.sleep(0.01)  # the later answer really is there first
            await asyncio.gather(*tasks)
        return windows

    windows = asyncio.run(exchange())
    assert windows >= 2  # the first window's first answer asked for the next window
    assert {o.alias for o in b.directory.list_objects(ObjectKind.MAILBOX, site="SiteA")} == {
        f"u{i}" for i in range(25)
    }
    with b.store.read() as conn:
        assert state.rejection_counts(conn) == {}
        peer = state.get_peer(conn, "SiteA")
        assert peer.outstanding_seq is None  # the last window's last answer ended it
