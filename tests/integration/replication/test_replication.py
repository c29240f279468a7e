"""Directory replication between real servers over SMTP on 127.10.10.x (issue 4)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sitemail.admin.wake import poke
from sitemail.directory import ObjectKind

from .conftest import idle, organisation, until


def run(scenario: Callable[[], Awaitable[None]], limit: float = 90) -> None:
    asyncio.run(asyncio.wait_for(scenario(), limit))


def test_replication_full_then_incremental(tmp_path: Path) -> None:
    """A pulls B's directory in several 512-object answers, then only what changed."""

    async def scenario() -> None:
        async with organisation(tmp_path) as org:
            a, b = org.create("SiteA"), org.create("SiteB")
            b.add_mailboxes(1100)
            org.connect(a, b)
            org.connect(b, a)
            await org.start(a)
            await org.start(b)
            assert a.request_now("SiteB").sent
            await until(idle(a, "SiteB"), what="A idle")
            assert a.replica("SiteB") == b.replica("SiteB")
            status = a.service.replication.status()
            peer = next(p for p in status.peers if p.peer == "SiteB")
            assert peer.answers_received == 3  # 1100 mailboxes + config: 512 + 512 + rest
            b.add_mailboxes(2, prefix="late")
            assert a.request_now("SiteB").sent
            await until(idle(a, "SiteB"), what="A idle again")
            assert {"late0", "late1"} <= a.aliases("SiteB")
            assert a.replica("SiteB") == b.replica("SiteB")
            peer = next(p for p in a.service.replication.status().peers if p.peer == "SiteB")
            assert peer.answers_received == 4

    run(scenario)


def peer_status(site: Any, peer: str) -> Any:
    return next(p for p in site.service.replication.status().peers if p.peer == peer)


def test_replication_refresh_all_resends_everything_and_changes_nothing(tmp_path: Path) -> None:
    """Refresh All pulls every object from USN 0 again; equal versions are left alone."""

    async def scenario() -> None:
        async with organisation(tmp_path) as org:
            a, b = org.create("SiteA"), org.create("SiteB")
            b.add_mailboxes(600)
            org.connect(a, b)
            org.connect(b, a)
            await org.start(a)
            await org.start(b)
            a.request_now("SiteB")
            await until(idle(a, "SiteB"))
            before = a.snapshot()
            applied = peer_status(a, "SiteB").objects_applied
            answers = peer_status(a, "SiteB").answers_received
            outcome = a.request_now("SiteB", refresh_all=True)
            assert outcome.sent
            assert "refresh-all" in outcome.detail
            await until(idle(a, "SiteB"))
            status = peer_status(a, "SiteB")
            assert status.answers_received == answers + 2  # 600 + config objects again
            assert status.objects_applied == applied  # nothing was newer
            assert a.snapshot() == before

    run(scenario)


def test_replication_deletion_travels_as_tombstone(tmp_path: Path) -> None:
    """A mailbox removed at its home site disappears at the replica, address and all."""

    async def scenario() -> None:
        async with organisation(tmp_path) as org:
            a, b = org.create("SiteA"), org.create("SiteB")
            b.service.add_recipient(ObjectKind.MAILBOX, "gone", display_name="Gone Soon")
            stays = b.service.add_recipient(
                ObjectKind.MAILBOX, "stays", display_name="Stays", password="s3cret pass phrase"
            )
            org.connect(a, b)
            org.connect(b, a)
            await org.start(a)
            await org.start(b)
            a.request_now("SiteB")
            await until(idle(a, "SiteB"))
            assert a.service.directory.lookup("gone@siteb.example.com") is not None
            assert b.service.directory.password_hash(stays.guid) is not None
            assert a.service.directory.password_hash(stays.guid) is None  # secrets stay home
            assert "s3cret" not in repr(a.snapshot())
            b.service.remove_recipient("gone")
            a.request_now("SiteB")
            await until(idle(a, "SiteB"))
            assert a.aliases("SiteB") == {"stays"}
            assert a.service.directory.lookup("gone@siteb.example.com") is None
            assert a.replica("SiteB") == b.replica("SiteB")  # the tombstone itself replicated

    run(scenario)


def test_replication_is_transitive_a_learns_c_through_b(tmp_path: Path) -> None:
    """With connectors A-B and B-C only, A holds C's recipients after pulling from B."""

    async def scenario() -> None:
        async with organisation(tmp_path) as org:
            a, b, c = org.create("SiteA"), org.create("SiteB"), org.create("SiteC")
            c.add_mailboxes(3, prefix="c")
            for x, y in ((a, b), (b, a), (b, c), (c, b)):
                org.connect(x, y)
            for site in (a, b, c):
                await org.start(site)
            b.request_now("SiteC")
            await until(idle(b, "SiteC"))
            a.request_now("SiteB")
            await until(idle(a, "SiteB"))
            assert a.aliases("SiteC") == {"c0", "c1", "c2"}
            assert a.replica("SiteC") == c.replica("SiteC")
            owner = a.service.directory.lookup("c1@sitec.example.com")
            assert owner is not None
            assert owner.site == "SiteC"
            c.service.add_recipient(ObjectKind.MAILBOX, "c9", display_name="Late C")
            b.request_now("SiteC")
            await until(idle(b, "SiteC"))
            a.request_now("SiteB")
            await until(idle(a, "SiteB"))
            assert "c9" in a.aliases("SiteC")
            assert {s.name for s in a.service.replication.kcc().sites} == {
                "SiteA",
                "SiteB",
                "SiteC",
            }

    run(scenario)


def test_replication_peer_down_then_back_misses_nothing(tmp_path: Path) -> None:
    """A request to a stopped site waits in the queue; once it is back, every change arrives."""

    async def scenario() -> None:
        async with organisation(tmp_path) as org:
            a, b = org.create("SiteA"), org.create("SiteB")
            b.add_mailboxes(5)
            org.connect(a, b)
            org.connect(b, a)
            await org.start(a)
            a.request_now("SiteB")  # B is not running: the request is deferred
            await until(
                lambda: any(r.attempts for e in a.service.queue.entries() for r in e.recipients),
                what="a delivery attempt",
            )
            assert peer_status(a, "SiteB").waiting
            assert not a.request_now("SiteB").sent  # no pile-up while waiting
            b.add_mailboxes(3, prefix="whiledown")
            b.service.remove_recipient("user0")
            await org.start(b)
            a.service.queue.retry(None)
            poke(a.data_dir)
            await until(idle(a, "SiteB"))
            assert a.replica("SiteB") == b.replica("SiteB")
            assert "whiledown2" in a.aliases("SiteB")
            assert "user0" not in a.aliases("SiteB")

    run(scenario)


def test_replication_one_sided_connector_is_held_as_pending_partner(tmp_path: Path) -> None:
    """B holds A's request (no connector to A there) until the admin accepts it; A waits."""

    async def scenario() -> None:
        async with organisation(tmp_path) as org:
            a, b = org.create("SiteA"), org.create("SiteB")
            b.add_mailboxes(2)
            org.connect(a, b)
            org.route(b, a)  # B can reach A, but has no replication connector to it
            await org.start(a)
            await org.start(b)
            a.request_now("SiteB")
            await until(lambda: bool(b.service.replication.pending()), what="pending partner")
            held = b.service.replication.pending()[0]
            assert (held.origin, held.state, held.routing_address) == (
                "SiteA",
                "pending",
                "sitea.example.com",
            )
            assert held.public_key == a.key()
            await until(lambda: not a.service.queue.entries() and not b.service.queue.entries())
            assert peer_status(a, "SiteB").waiting
            assert a.aliases("SiteB") == set()  # not answered
            assert not a.request_now("SiteB").sent  # one outstanding request, no duplicates
            codes = {w.code for w in b.service.replication.kcc().warnings}
            assert "pending-partner" in codes
            b.service.replication.accept_pending("SiteA", schedule="never")
            poke(b.data_dir)
            await until(idle(a, "SiteB"))
            assert a.aliases("SiteB") == {"user0", "user1"}
            assert b.service.replication.pending() == []
            assert [c.site for c in b.service.replication.list_connectors()] == ["SiteA"]

    run(scenario)


async def one_sided_request(org: Any, a: Any, b: Any) -> None:
    """The article's one-sided start: B (two mailboxes) can reach A but has no connector to
    it; A asks B, and B holds the request as a pending partner."""
    b.add_mailboxes(2)
    org.connect(a, b)
    org.route(b, a)
    await org.start(a)
    await org.start(b)
    a.request_now("SiteB")
    await until(lambda: bool(b.service.replication.pending()), what="pending partner")


def test_replication_connector_added_later_answers_the_held_request(tmp_path: Path) -> None:
    """The article's order: A's connector (and its first request) exists before B's. When B's
    admin then adds the connector with A's key, the held request is answered at once: A does
    not wait for its outstanding request to time out before it learns B's directory."""

    async def scenario() -> None:
        async with organisation(tmp_path) as org:
            a, b = org.create("SiteA"), org.create("SiteB")
            await one_sided_request(org, a, b)
            org.connect(b, a)  # pins A's real key: the held request is believed and answered
            poke(b.data_dir)
            await until(idle(a, "SiteB"), what="A answered")
            assert a.aliases("SiteB") == {"user0", "user1"}
            assert b.service.replication.pending() == []

    run(scenario)


def test_replication_connector_with_another_key_leaves_the_held_request_unanswered(
    tmp_path: Path,
) -> None:
    """A connector pinning some other key than the one the held request was signed with does
    not answer it (the request cannot be verified against the pinned key)."""

    async def scenario() -> None:
        async with organisation(tmp_path) as org:
            a, b, c = org.create("SiteA"), org.create("SiteB"), org.create("SiteC")
            await one_sided_request(org, a, b)
            b.service.replication.add_connector(
                "SiteA",
                bridgehead="ServerA",
                routing_address=a.domain,
                peer_key=c.key(),
                schedule="never",
            )
            poke(b.data_dir)
            await until(lambda: not a.service.queue.entries() and not b.service.queue.entries())
            assert a.aliases("SiteB") == set()
            assert peer_status(a, "SiteB").waiting

    run(scenario)


def test_replication_connector_added_to_a_running_server_requests_at_once(
    tmp_path: Path,
) -> None:
    """A connector added after the start-up request time asks at the scheduler's next tick,
    not an hour later (startup_delay is an hour in the harness)."""

    async def scenario() -> None:
        async with organisation(tmp_path) as org:
            a, b = org.create("SiteA"), org.create("SiteB")
            b.add_mailboxes(2)
            org.connect(b, a)
            await org.start(b)
            await org.start(a)
            await asyncio.sleep(1.5)  # the scheduler has ticked without connectors
            org.connect(a, b)
            await until(lambda: a.aliases("SiteB") == {"user0", "user1"}, what="pull at once")

    run(scenario)


def test_replication_every_connector_requests_shortly_after_start(tmp_path: Path) -> None:
    """Without any admin action, a connector pulls `startup_delay` after the server starts."""

    async def scenario() -> None:
        async with organisation(tmp_path) as org:
            a = org.create("SiteA", startup_delay=0.5)
            b = org.create("SiteB")
            b.add_mailboxes(2)
            org.connect(a, b)
            org.connect(b, a)
            await org.start(b)
            await org.start(a)
            await until(lambda: a.aliases("SiteB") == {"user0", "user1"}, what="start-up pull")

    run(scenario)
