"""Home-site routing while the sites disagree (issue 17), on real servers.

Three sites share example.com, each reached directly; every site pulls from every other, and
each test decides when replication runs (`request_now`). A mailbox moved by remove-and-add
(removed at SiteA, created at SiteC) is the lag case: a site that has learned the removal
but not yet the creation must wait, never bounce, and deliver once it knows the new home.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.support.org import (
    Org,
    Site,
    delivered,
    idle,
    knows,
    mailbox,
    organisation,
    replicate,
    until,
)

ADDRESSES = {"SiteA": "127.25.0.1", "SiteB": "127.25.0.2", "SiteC": "127.25.0.3"}
OUTSIDER = "someone@internet.test"
BODY = (
    b"From: someone@internet.test\r\nSubject: lag\r\nMessage-ID: <%s@internet.test>\r\n\r\nhi\r\n"
)


def run(scenario: Callable[[], Awaitable[None]], limit: float = 150) -> None:
    asyncio.run(asyncio.wait_for(scenario(), limit))


async def three_sites(org: Org) -> tuple[Site, Site, Site]:
    """A, B and C, all connected both ways, alice at A, replicated everywhere."""
    a, b, c = org.create("SiteA"), org.create("SiteB"), org.create("SiteC")
    mailbox(a, "alice", "alice@example.com")
    mailbox(b, "bob", "bob@example.com")
    pairs = [(a, b), (b, c), (a, c)]
    for x, y in pairs:
        for p, q in ((x, y), (y, x)):
            org.connect(p, q)
            org.link(p, q)
    for site in (a, b, c):
        await org.start(site)
    await replicate(pairs)
    for site in (b, c):
        await until(knows(site, "alice@example.com", "SiteA"), what=f"{site.name} knows alice")
    return a, b, c


def rcpt_reply(site: Site, address: str) -> tuple[int, bytes]:
    """The answer to RCPT TO:<address> at `site`, from an Internet client."""
    with smtplib.SMTP(site.address, site.port, local_hostname="client.test", timeout=10) as c:
        c.ehlo()
        c.mail(OUTSIDER)
        return c.rcpt(address)


async def pull(site: Site, peer: Site) -> None:
    site.request_now(peer.name)
    await until(idle(site, peer.name), what=f"{site.name} pulled from {peer.name}")


async def move_alice_to_c(a: Site, c: Site) -> None:
    """The move as remove-and-add: C learns the removal first, then creates alice."""
    a.service.remove_recipient("alice")
    await pull(c, a)
    mailbox(c, "alice", "alice@example.com")


def no_bounce(*sites: Site) -> Callable[[], bool]:
    """No site holds or has sent a DSN (a bounce would be queued for the outsider)."""

    def check() -> bool:
        return not any(e.is_dsn or e.sender == "" for s in sites for e in s.service.queue.entries())

    return check


async def delivered_once(home: Site, alias: str, holder: Site, sites: tuple[Site, ...]) -> None:
    """The message reaches `alias` at `home` once, `holder` lets it go, nothing bounced."""
    await until(delivered(home, alias), what=f"{alias}'s mail at {home.name}")
    await until(lambda: not holder.service.queue.entries(), what=f"{holder.name}'s queue empty")
    await asyncio.sleep(0.5)  # a second copy would have arrived by now
    assert len(home.inbox(alias)) == 1
    assert no_bounce(*sites)()


def waiting_for_replication(site: Site) -> Callable[[], bool]:
    def check() -> bool:
        entries = site.service.queue.entries()
        return bool(entries) and entries[0].recipients[0].last_status == "4.4.3"

    check.explain = lambda: str(site.service.queue.entries())  # type: ignore[attr-defined]
    return check


def test_lag_message_queued_before_the_move_waits_and_reaches_the_new_home(
    tmp_path: Path,
) -> None:
    """B queues mail for alice (A down), then learns alice was removed at A before it learns
    she was created at C: B defers (4.4.3), never bounces, and delivers to C once it knows."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a, b, c = await three_sites(org)
            await move_alice_to_c(a, c)
            await org.stop(a)
            refused = await asyncio.to_thread(
                b.send, OUTSIDER, ["alice@example.com"], BODY % b"queued"
            )
            assert refused == {}  # B still thinks alice lives at A
            await org.start(a)
            await pull(b, a)  # B learns the removal, not the creation
            assert b.service.directory.lookup("alice@example.com") is None
            b.retry_queue()
            await until(waiting_for_replication(b), what="deferred at B for replication")
            (entry,) = b.service.queue.entries()
            assert "SiteC" in entry.recipients[0].last_text
            assert no_bounce(a, b, c)()

            await pull(b, c)  # converged: the deferral is retried without an admin
            await delivered_once(c, "alice", b, (a, b, c))

    run(scenario)


def test_mail_reaching_the_old_home_during_the_lag_is_forwarded_to_the_new_home(
    tmp_path: Path,
) -> None:
    """B still thinks alice lives at A and forwards to A; A (removed her, has not seen C's
    creation) accepts a sibling's mail, waits for replication and forwards to C once known."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a, b, c = await three_sites(org)
            await move_alice_to_c(a, c)
            assert knows(b, "alice@example.com", "SiteA")()
            refused = await asyncio.to_thread(
                b.send, OUTSIDER, ["alice@example.com"], BODY % b"old-home"
            )
            assert refused == {}
            await until(lambda: not b.service.queue.entries(), what="B forwarded it to A")
            await until(waiting_for_replication(a), what="held at A for replication")
            assert no_bounce(a, b, c)()
            # From the Internet, the old home answers 450 while the move may be in flight
            # (alice was removed here a moment ago), never 550.
            code, text = await asyncio.to_thread(rcpt_reply, a, "alice@example.com")
            assert (code, text[:5]) == (450, b"4.4.3"), text
            assert b"recently removed at SiteA" in text
            code, _ = await asyncio.to_thread(rcpt_reply, a, "nobody@example.com")
            assert code == 550  # replication is current: an unknown user is refused

            await pull(a, c)
            await delivered_once(c, "alice", a, (a, b, c))

    run(scenario)


def test_loop_guard_lets_a_re_route_through_a_passed_site_go_on(tmp_path: Path) -> None:
    """Mail paths A-B and B-C only. B still thinks alice lives at A and sends her mail there;
    A knows she moved to C, and its only path runs back through B: a re-route, not a loop.
    B, which routed the message before at the same directory, holds it (4.4.6, reported by
    the KCC) until replication changes its mind, then it reaches C once."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a, b, c = org.create("SiteA"), org.create("SiteB"), org.create("SiteC")
            mailbox(a, "alice", "alice@example.com")
            for x, y in ((a, b), (b, c), (a, c)):
                org.connect(x, y)
                org.connect(y, x)
            for x, y in ((a, b), (b, c)):  # mail goes A-B-C: no direct path between A and C
                org.link(x, y)
                org.link(y, x)
            for site in (a, b, c):
                await org.start(site)
            await replicate([(a, b), (b, c), (a, c)])
            await move_alice_to_c(a, c)
            await pull(a, c)
            assert knows(a, "alice@example.com", "SiteC")()
            assert knows(b, "alice@example.com", "SiteA")()

            refused = await asyncio.to_thread(
                b.send, OUTSIDER, ["alice@example.com"], BODY % b"loop"
            )
            assert refused == {}

            def held_at_b() -> bool:
                entries = b.service.queue.entries()
                return bool(entries) and entries[0].recipients[0].last_status == "4.4.6"

            await until(held_at_b, what="held at B (it routed it before, same directory)")
            assert not a.service.queue.entries()  # A sent it on: a re-route, never parked
            (warning,) = [w for w in b.service.replication.kcc().warnings if "loop" in w.code]
            assert "same directory" in warning.message
            assert "request-now" in warning.fix

            await pull(b, a)  # B's directory changes: the held message goes on by itself
            await pull(b, c)
            await delivered_once(c, "alice", b, (a, b, c))
            (got,) = c.inbox("alice")
            assert got.content.count(b"X-Sitemail-Trace") == 3  # B -> A -> B -> C
            assert no_bounce(a, b, c)()

    run(scenario)


def test_one_owner_for_an_alias_created_at_two_sites_before_they_replicated(
    tmp_path: Path,
) -> None:
    """jsmith at A, then at B, both @example.com before replicating: once replicated, mail for
    jsmith@example.com entering at A, B or C reaches A's (older) jsmith; B moved its claim
    aside to jsmith2@example.com by itself, and every site's KCC says so."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a, b, c = org.create("SiteA"), org.create("SiteB"), org.create("SiteC")
            pairs = [(a, b), (b, c), (a, c)]
            for x, y in pairs:
                for p, q in ((x, y), (y, x)):
                    org.connect(p, q)
                    org.link(p, q)
            for site in (a, b):
                site.service.set_addressing("smtp", "%m@example.com", update_recipients=True)
            mailbox(a, "jsmith")
            mailbox(b, "jsmith")  # created later: the younger object
            for site in (a, b, c):
                await org.start(site)
            await replicate(pairs, rounds=2)
            for site in (a, b, c):
                await until(knows(site, "jsmith@example.com", "SiteA"), what="A's jsmith")
                await until(knows(site, "jsmith2@example.com", "SiteB"), what="B's jsmith2")

            for site, tag in ((a, b"at-a"), (b, b"at-b"), (c, b"at-c")):
                refused = await asyncio.to_thread(
                    site.send, OUTSIDER, ["jsmith@example.com"], BODY % tag
                )
                assert refused == {}
            refused = await asyncio.to_thread(
                c.send, OUTSIDER, ["jsmith2@example.com"], BODY % b"second"
            )
            assert refused == {}
            await until(delivered(a, "jsmith", 3), what="three at A's jsmith")
            await until(delivered(b, "jsmith"), what="one at B's jsmith")
            await until(
                lambda: not any(s.service.queue.entries() for s in (a, b, c)), what="queues empty"
            )
            await asyncio.sleep(0.5)
            assert len(a.inbox("jsmith")) == 3
            (second,) = b.inbox("jsmith")
            assert b"Message-ID: <second@" in second.content
            for site in (a, b, c):
                codes = [w.code for w in site.service.replication.kcc().warnings]
                assert "duplicate-address" not in codes
                (moved,) = [
                    w
                    for w in site.service.replication.kcc().warnings
                    if w.code == "address-moved-aside"
                ]
                assert "SiteB/jsmith gave up jsmith@example.com" in moved.message
                assert "jsmith2@example.com" in moved.message
            assert no_bounce(a, b, c)()

    run(scenario)
