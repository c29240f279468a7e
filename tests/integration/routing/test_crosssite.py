"""One shared domain over three real sites on the article's addresses (127.10.10.10/.15/.20).

Each site is a real `sitemail serve` (SiteServer) with its own database and SMTP port. Sites
learn each other's recipients by directory replication over SMTP, then switch Site Addressing
to @example.com as the article does; mail from outside arrives at SiteA and must reach each
user's home site through the Connected Sites routes (hop by hop, envelope unchanged).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from tests.support.org import (
    ARTICLE_ADDRESSES,
    Org,
    Site,
    delivered,
    free_port,
    knows,
    mailbox,
    organisation,
    replicate,
    until,
)

from sitemail.admin.routing import certificate_fingerprint
from sitemail.routing.trace import trace_sites

OUTSIDER = "someone@internet.test"
BODY = (
    b"From: someone@internet.test\r\nSubject: hello\r\nMessage-ID: <%s@internet.test>\r\n\r\nhi\r\n"
)


def run(scenario: Callable[[], Awaitable[None]], limit: float = 120) -> None:
    asyncio.run(asyncio.wait_for(scenario(), limit))


def body(tag: str) -> bytes:
    return BODY % tag.encode()


async def article_org(org: Org, *, chain: bool = False, **link: Any) -> tuple[Site, Site, Site]:
    """SiteA, SiteB, SiteC with users, connected sites and replication connectors (A-B, B-C,
    and A-C unless `chain`), replicated, then re-addressed to @example.com site by site."""
    a, b, c = org.create("SiteA"), org.create("SiteB"), org.create("SiteC")
    mailbox(a, "user1")
    mailbox(b, "user2")
    mailbox(b, "user2b")
    mailbox(c, "user3")
    pairs = [(a, b), (b, c)] if chain else [(a, b), (b, c), (a, c)]
    for x, y in pairs:
        org.connect(x, y)
        org.connect(y, x)
        org.link(x, y, **link)
        org.link(y, x)
    for site in (a, b, c):
        await org.start(site)
    await replicate(pairs, rounds=2)
    for site in (a, b, c):  # the article: one site after the other, after replication
        site.service.set_addressing("smtp", "%m@example.com", update_recipients=True)
        await replicate(pairs, rounds=2 if chain else 1)
    await until(knows(a, "user3@example.com", "SiteC"), what="A knows user3@example.com")
    await until(knows(a, "user2@example.com", "SiteB"), what="A knows user2@example.com")
    return a, b, c


def test_shared_domain_mail_reaches_each_home_site_once(tmp_path: Path) -> None:
    """Mail from outside for users of all three sites arrives at SiteA: each reaches its home
    mailbox; SiteB's two recipients travel in one transaction; the envelope is unchanged."""

    async def scenario() -> None:
        async with organisation(tmp_path, ARTICLE_ADDRESSES) as org:
            a, b, c = await article_org(org)
            rcpts = ["user1@example.com", "user2@example.com", "user2b@example.com"]
            rcpts += ["user3@example.com", "user3@sitec.example.com"]  # old address: secondary
            refused = await asyncio.to_thread(a.send, OUTSIDER, rcpts, body("one"))
            assert refused == {}
            await until(delivered(a, "user1"), what="user1 at SiteA")
            await until(delivered(b, "user2"), what="user2 at SiteB")
            await until(delivered(b, "user2b"), what="user2b at SiteB")
            await until(delivered(c, "user3", 2), what="user3 twice at SiteC")
            await until(lambda: not a.service.queue.entries(), what="SiteA's queue empty")
            (two,), (two_b,) = b.inbox("user2"), b.inbox("user2b")
            assert two.queue_id == two_b.queue_id  # one SMTP transaction carried both
            assert b"Delivered-To: user2@example.com" in two.content  # envelope unchanged
            assert set(trace_sites(two.content)) == {"SiteA"}
            assert [m.content.count(b"X-Sitemail-Trace") for m in c.inbox("user3")] == [1, 1]
            assert len(a.inbox("user1")) == 1

    run(scenario)


def test_chain_without_a_direct_connection_delivers_through_the_middle_site(
    tmp_path: Path,
) -> None:
    """Connected sites A-B and B-C only: A learns C's users through B and routes them via B."""

    async def scenario() -> None:
        async with organisation(tmp_path, ARTICLE_ADDRESSES) as org:
            a, b, c = await article_org(org, chain=True)
            path = a.service.routing.table().sites["SiteC"]
            assert (path.path, path.cost) == (("SiteA", "SiteB", "SiteC"), 2)
            refused = await asyncio.to_thread(a.send, OUTSIDER, ["user3@example.com"], body("c"))
            assert refused == {}
            await until(delivered(c, "user3"), what="user3 at SiteC")
            (got,) = c.inbox("user3")
            assert set(trace_sites(got.content)) == {"SiteA", "SiteB"}
            explained = a.service.routing.explain("user3@example.com")
            assert "SiteA > SiteB > SiteC" in "\n".join(explained.steps)
            assert not b.inbox("user2")

    run(scenario)


def test_site_down_keeps_the_message_queued_until_it_returns(tmp_path: Path) -> None:
    """B stops: A keeps user2's message deferred; B returns: it arrives exactly once."""

    async def scenario() -> None:
        async with organisation(tmp_path, ARTICLE_ADDRESSES) as org:
            a, b, _ = await article_org(org)
            await org.stop(b)
            refused = await asyncio.to_thread(a.send, OUTSIDER, ["user2@example.com"], body("d"))
            assert refused == {}

            def deferred() -> bool:
                entries = a.service.queue.entries()
                return bool(entries) and entries[0].recipients[0].attempts >= 1

            deferred.explain = lambda: str(a.service.queue.track("<d@internet.test>"))  # type: ignore[attr-defined]
            await until(deferred, what="deferred at SiteA")
            (entry,) = a.service.queue.entries()
            assert entry.recipients[0].last_status.startswith("4.")
            await org.start(b)
            a.retry_queue()
            await until(delivered(b, "user2"), what="user2 at SiteB after its return")
            await until(lambda: not a.service.queue.entries(), what="SiteA's queue empty")
            a.retry_queue()
            await asyncio.sleep(0.5)
            assert len(b.inbox("user2")) == 1

    run(scenario)


def test_replication_lag_loop_is_held_then_delivered_once(tmp_path: Path) -> None:
    """A thinks pat lives at B, B thinks pat lives at A (both deleted their own, each still
    holds the other's stale replica), the real pat is new at C. The message goes A -> B -> A
    once (B never routed it: a re-route), then A, which routed it before at the same
    directory, holds it (4.4.6, shown in the queue and by the KCC); it reaches C once, as
    soon as A's directory changes."""

    async def scenario() -> None:
        async with organisation(tmp_path, ARTICLE_ADDRESSES) as org:
            a, b, c = org.create("SiteA"), org.create("SiteB"), org.create("SiteC")
            mailbox(a, "pat", "pat@example.com")
            mailbox(b, "pat", "pat@example.com")  # F6: both before replicating
            for x, y in ((a, b), (b, c), (a, c)):
                org.connect(x, y)
                org.connect(y, x)
                org.link(x, y)
                org.link(y, x)
            for site in (a, b, c):
                await org.start(site)
            await replicate([(a, b)])
            a.service.remove_recipient("pat")
            b.service.remove_recipient("pat")
            mailbox(c, "pat", "pat@example.com")  # C has not seen the others' pat
            assert knows(a, "pat@example.com", "SiteB")()
            assert knows(b, "pat@example.com", "SiteA")()

            refused = await asyncio.to_thread(a.send, OUTSIDER, ["pat@example.com"], body("p"))
            assert refused == {}

            def held_at_a() -> bool:
                entries = a.service.queue.entries()
                return bool(entries) and entries[0].recipients[0].last_status == "4.4.6"

            await until(held_at_a, what="held at SiteA")
            (entry,) = a.service.queue.entries()
            assert "routing loop" in entry.recipients[0].last_text
            warnings = a.service.replication.kcc().warnings
            assert any(w.code == "site-loop-deferred" for w in warnings)
            await until(lambda: not b.service.queue.entries(), what="SiteB handed it back")

            await replicate([(b, c), (a, b), (a, c)])  # the directories agree: pat is at C
            assert knows(a, "pat@example.com", "SiteC")()
            await until(delivered(c, "pat"), what="pat at SiteC")
            await until(lambda: not a.service.queue.entries(), what="SiteA's queue empty")
            (got,) = c.inbox("pat")
            assert set(trace_sites(got.content)) == {"SiteA", "SiteB"}
            assert got.content.count(b"X-Sitemail-Trace") == 3  # A -> B -> A -> C, no more
            at_b = [e.event for e in b.service.queue.track("<p@internet.test>")]
            assert at_b.count("received") == 1  # it passed B once

    run(scenario, limit=150)


class _Sink:
    """The other mail system of a shared address space: records what it is given."""

    def __init__(self) -> None:
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        del server, session
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 2.0.0 Ok"


def test_internal_relay_domain_forwards_unresolved_recipients(tmp_path: Path) -> None:
    """partner.example is shared with another mail system: its users we know are delivered
    here, the others go to that system's host with the recipient unchanged."""

    async def scenario() -> None:
        handler = _Sink()
        host = "127.10.10.12"
        controller = Controller(handler, hostname=host, port=free_port(host))
        controller.start()
        try:
            async with organisation(tmp_path, ARTICLE_ADDRESSES) as org:
                a = org.create("SiteA")
                mailbox(a, "known", "known@partner.example")
                a.service.routing.add_domain(
                    "partner.example",
                    internal_relay=True,
                    forward_unresolved=f"{host}:{controller.port}",
                )
                await org.start(a)
                rcpts = ["known@partner.example", "stranger@partner.example"]
                refused = await asyncio.to_thread(a.send, OUTSIDER, rcpts, body("r"))
                assert refused == {}
                await until(lambda: bool(handler.envelopes), what="forwarded to the partner")
                await until(delivered(a, "known"), what="known delivered here")
                assert handler.envelopes == [(OUTSIDER, ["stranger@partner.example"])]
        finally:
            controller.stop()

    run(scenario)


def test_pinned_site_certificate_mismatch_defers_then_the_right_pin_delivers(
    tmp_path: Path,
) -> None:
    """A pins a wrong certificate for B: mail for B's users is deferred (4.7.5), nothing is
    sent in plaintext; pinned to B's real certificate it goes, over TLS."""

    async def scenario() -> None:
        async with organisation(tmp_path, ARTICLE_ADDRESSES) as org:
            a, b, _ = await article_org(org, tls_fingerprint="ab" * 32)
            refused = await asyncio.to_thread(a.send, OUTSIDER, ["user2@example.com"], body("t"))
            assert refused == {}

            def pinned_defer() -> bool:
                entries = a.service.queue.entries()
                return bool(entries) and entries[0].recipients[0].last_status == "4.7.5"

            await until(pinned_defer, what="deferred for the pin")
            assert not b.inbox("user2")
            a.service.routing.remove_connected_site("SiteB")
            pin = certificate_fingerprint(b.service.config)
            a.service.routing.add_connected_site("SiteB", b.domain, tls_fingerprint=pin)
            await asyncio.sleep(2.1)  # the router's table cache
            a.retry_queue()
            await until(delivered(b, "user2"), what="user2 at SiteB over pinned TLS")
            (got,) = b.inbox("user2")
            assert b"with ESMTPS" in got.content  # B's Received header: TLS

    run(scenario)
