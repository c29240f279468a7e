"""A sibling site's resend is recognised by its signed trace and stored once; nothing else is.

Real sites (SiteServer, real SMTP between them) on 127.21.1.x. A resend is what a site does
after a crash that lost the record of a delivery: its transport sends the same queued message
(same queue id, same content) to the same next hop again. Here the test makes the site's own
transport do exactly that, with the message as it was queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from tests.support.content import BytesSource
from tests.support.org import Org, Site, organisation, until

from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.directory import ObjectKind
from sitemail.queue.content import MEMORY_LIMIT, Content
from sitemail.queue.model import Outcome, QueuedMessage, QueuedRecipient, RecipientResult
from sitemail.queue.records import load_messages
from sitemail.replication.keys import SiteKey
from sitemail.routing.route import Route, Transport
from sitemail.routing.trace import content_digest, signed_trace_field
from sitemail.store.tables import relay_seen

ADDRESSES = {"SiteA": "127.21.1.1", "SiteB": "127.21.1.2", "SiteC": "127.21.1.3"}
OUTSIDER = "someone@internet.test"


def run(scenario: Callable[[], Awaitable[None]], limit: float = 120) -> None:
    asyncio.run(asyncio.wait_for(scenario(), limit))


def body(tag: str, lines: int = 1) -> bytes:
    text = f"From: {OUTSIDER}\r\nMessage-ID: <{tag}@internet.test>\r\n\r\n"
    return (text + f".hi {tag}, a line of the message's body\r\n" * lines).encode()


async def chain(org: Org, *, with_c: bool) -> tuple[Site, Site, Site | None]:
    """SiteA - SiteB (- SiteC): connectors and Connected Sites along the chain, SiteB's
    mailboxes user2 and user2b (and SiteC's user3), A (and B) replicated."""
    a, b = org.create("SiteA"), org.create("SiteB")
    c = org.create("SiteC") if with_c else None
    for alias in ("user2", "user2b"):
        b.service.add_recipient(ObjectKind.MAILBOX, alias, display_name=alias)
    pairs = [(a, b)]
    if c is not None:
        c.service.add_recipient(ObjectKind.MAILBOX, "user3", display_name="user3")
        pairs.append((b, c))
    for x, y in pairs:
        for here, there in ((x, y), (y, x)):
            org.connect(here, there)
            org.link(here, there)
    for site in (a, b, c):
        if site is not None:
            await org.start(site)
    for _ in range(2):  # twice: A learns C through B
        for x, y in pairs:
            for puller, peer in ((x, y), (y, x)):
                puller.request_now(peer.name)
                await until(lambda p=puller: not _replication_mail(p), what="replicated")
    if c is not None:
        await until(lambda: a.service.directory.lookup(f"user3@{c.domain}") is not None)
    return a, b, c


def _replication_mail(site: Site) -> bool:
    status = site.service.replication.status()
    return any(p.waiting for p in status.peers) or any(
        r.address.startswith("sitemail-dsa@")
        for e in site.service.queue.entries()
        for r in e.recipients
    )


async def queued_while_down(
    org: Org, sender: Site, down: Site, send: Callable[[], object]
) -> tuple[QueuedMessage, Content, list[QueuedRecipient]]:
    """Stop `down`, make mail queue at `sender` for it, and return that message as queued
    (a big one as a handle read in chunks, as the queue loads it, on a copy of its row)."""
    await org.stop(down)
    await asyncio.to_thread(send)

    def held() -> bool:
        return any(r.attempts for e in sender.service.queue.entries() for r in e.recipients)

    await until(held, what=f"deferred at {sender.name}")
    with sender.service.store.read() as conn:
        ids = [e.queue_id for e in sender.service.queue.entries()]
        [(message, content, rows)] = load_messages(conn, ids, store=sender.service.store)
    if not content.in_memory:  # read now: the row goes once the message is delivered
        whole = await asyncio.to_thread(content.whole)
        content = Content.behind(BytesSource(whole), content.size, content.head)
    await org.start(down)
    sender.retry_queue()
    return message, content, [r for r, _ in rows]


async def resend(
    sender: Site, to: str, message: QueuedMessage, content: Content, rcpts: list[QueuedRecipient]
) -> list[RecipientResult]:
    """What `sender` does after a crash that lost its record: the same message again."""
    assert sender.server is not None
    assert sender.server.components is not None
    remote = sender.server.components.remote
    members = [(r, Route(Transport.SITE, to, r.recipient.address)) for r in rcpts]
    return await remote.deliver(message, content, members)


def test_resend_from_a_sibling_site_is_answered_250_and_stored_once(tmp_path: Path) -> None:
    """A sends B a message it already delivered: 250 naming the first copy, one copy kept;
    a partial resend (one recipient new) stores the new recipient's copy only."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a, b, _ = await chain(org, with_c=False)
            two, two_b = f"user2@{b.domain}", f"user2b@{b.domain}"
            message, content, rcpts = await queued_while_down(
                org, a, b, lambda: a.send(OUTSIDER, [two], body("r1"))
            )
            await until(lambda: len(b.inbox("user2")) == 1, what="user2 at SiteB")
            (first,) = b.inbox("user2")

            results = await resend(a, "SiteB", message, content, rcpts)
            assert [r.outcome for r in results] == [Outcome.DELIVERED]
            assert f"queued as {first.queue_id}" in results[0].text
            assert len(b.inbox("user2")) == 1

            # The same queued message, now for user2b as well (a recipient added on the way).
            extra = QueuedRecipient(
                rcpts[0].id + 1000, message.queue_id, EnvelopeRecipient(two_b), 0, None, False
            )
            envelope = Envelope(
                message.envelope.sender, (*message.envelope.recipients, extra.recipient)
            )
            widened = QueuedMessage(
                message.queue_id,
                envelope,
                message.received_at,
                message.size,
                message.message_id,
                message.is_dsn,
            )
            results = await resend(a, "SiteB", widened, content, [*rcpts, extra])
            assert [r.outcome for r in results] == [Outcome.DELIVERED] * 2
            await until(lambda: len(b.inbox("user2b")) == 1, what="user2b at SiteB")
            assert len(b.inbox("user2")) == 1
            events = [e.event for e in b.service.queue.track("<r1@internet.test>")]
            assert events.count("duplicate") == 2

    run(scenario)


def test_resend_of_a_big_message_is_recognised_from_its_spool_file(tmp_path: Path) -> None:
    """A 3 MB message: A signs the digest of its queue row read in chunks, B checks it on
    the file DATA was spooled to; the resend gets 250 naming the first copy, stored once."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a, b, _ = await chain(org, with_c=False)
            two = f"user2@{b.domain}"
            big = body("big", lines=3 * MEMORY_LIMIT // 40)
            message, content, rcpts = await queued_while_down(
                org, a, b, lambda: a.send(OUTSIDER, [two], big)
            )
            assert not content.in_memory  # A reads it in chunks to sign and send it
            await until(lambda: len(b.inbox("user2")) == 1, what="user2 at SiteB", limit=60)
            (first,) = b.inbox("user2")
            with b.service.store.read() as conn:
                seen = conn.execute(select(relay_seen.c.site, relay_seen.c.origin_id)).all()
            assert [tuple(r) for r in seen] == [("SiteA", message.queue_id)]

            results = await resend(a, "SiteB", message, content, rcpts)
            assert [r.outcome for r in results] == [Outcome.DELIVERED]
            assert f"queued as {first.queue_id}" in results[0].text
            await asyncio.sleep(0.2)
            assert len(b.inbox("user2")) == 1

    run(scenario, limit=180)


def test_resend_through_an_intermediate_site_is_recognised_by_the_last_site(
    tmp_path: Path,
) -> None:
    """A -> B -> C: C proves B's origin (B's field is on top of A's) and stores B's resend
    once."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a, b, c = await chain(org, with_c=True)
            assert c is not None
            three = f"user3@{c.domain}"
            message, content, rcpts = await queued_while_down(
                org, b, c, lambda: a.send(OUTSIDER, [three], body("r2"))
            )
            assert content.whole().count(b"X-Sitemail-Trace: SiteA;") == 1  # B holds A's hop
            await until(lambda: len(c.inbox("user3")) == 1, what="user3 at SiteC")
            with c.service.store.read() as conn:
                seen = conn.execute(select(relay_seen.c.site, relay_seen.c.origin_id)).all()
            assert [tuple(r) for r in seen] == [("SiteB", message.queue_id)]

            results = await resend(b, "SiteC", message, content, rcpts)
            assert [r.outcome for r in results] == [Outcome.DELIVERED]
            await asyncio.sleep(0.2)
            assert len(c.inbox("user3")) == 1

    run(scenario, limit=150)


def test_resend_forged_trace_never_makes_a_real_message_be_dropped(tmp_path: Path) -> None:
    """An outsider sends B a message with a trace naming A's next queue id, signed with a key
    that is not A's: B stores it as ordinary mail, remembers nothing, and A's real message
    with that id is stored too."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a, b, _ = await chain(org, with_c=False)
            two = f"user2@{b.domain}"
            message, content, rcpts = await queued_while_down(
                org, a, b, lambda: a.send(OUTSIDER, [two], body("r3"))
            )
            await until(lambda: len(b.inbox("user2")) == 1, what="user2 at SiteB")
            # Now the forger, with A's next message in mind: same id, same recipient.
            forged_content = body("forged")
            field = signed_trace_field(
                "SiteA",
                "NEXT0000000000000",
                1.0,
                sign=SiteKey(Ed25519PrivateKey.generate()).sign,
                to_site="SiteB",
                sender=OUTSIDER,
                recipients=[two],
                digest=content_digest(forged_content),
            )
            assert await asyncio.to_thread(b.send, OUTSIDER, [two], field + forged_content) == {}
            await until(lambda: len(b.inbox("user2")) == 2, what="the forged one stored")
            real = QueuedMessage(
                "NEXT0000000000000", message.envelope, message.received_at, message.size, "", False
            )
            results = await resend(a, "SiteB", real, content, rcpts)
            assert [r.outcome for r in results] == [Outcome.DELIVERED]
            await until(lambda: len(b.inbox("user2")) == 3, what="A's real one stored")

    run(scenario)
