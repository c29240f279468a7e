"""Queue claims with leases (queue.claims) on a real database: one server at a time delivers a
message, a dead server's claims are taken over after their lease, and on PostgreSQL two
servers taking at once split the due messages (FOR UPDATE SKIP LOCKED) instead of waiting."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from sitemail.admin.service import AdminService
from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.queue import claims
from sitemail.queue.content import Content
from sitemail.queue.model import QueueId
from sitemail.queue.records import NewMessage, insert_message
from sitemail.store import Store, open_store, upgrade

LEASE = 60.0


def queue(store: Store, count: int, now: float = 1.0) -> list[str]:
    """`count` messages due at `now`, to a remote recipient each."""
    ids = [f"Q{i:04d}" for i in range(count)]
    envelope = Envelope("a@outside.test", (EnvelopeRecipient("x@partner.test"),))
    with store.write() as conn:
        for qid in ids:
            message = NewMessage(envelope, Content.of(b"Subject: t\r\n\r\nx\r\n"))
            insert_message(conn, QueueId(qid), message, now, "SiteA")
    return ids


def test_claims_one_server_at_a_time_until_the_lease_runs_out(site_a: AdminService) -> None:
    """A's claim keeps B out, is A's again at once, and is B's after the lease: then A, had it
    stalled, finds the message no longer its own."""
    store = site_a.store
    ids = queue(store, 3)
    with store.write() as conn:
        assert claims.take(conn, ids, "ServerA", 10.0, LEASE) == ids
    with store.write() as conn:
        assert claims.take(conn, ids, "ServerB", 10.0 + LEASE - 1, LEASE) == []
        assert claims.take(conn, ids[:1], "ServerA", 20.0, LEASE) == ids[:1]  # a restart
    with store.read() as conn:
        assert claims.due_ids(conn, 30.0, 10, "ServerB") == []
        assert claims.next_due(conn, "ServerB", 30.0) == 10.0 + LEASE  # B wakes at the end
        assert set(claims.due_ids(conn, 30.0, 10, "ServerA")) == set(ids)
    later = 20.0 + LEASE + 1
    with store.write() as conn:
        assert claims.take(conn, ids, "ServerB", later, LEASE) == ids
    with store.write() as conn:
        assert claims.hold(conn, ids, "ServerA") == set()
        assert claims.hold(conn, ids, "ServerB") == set(ids)


def test_claims_renewal_keeps_a_slow_delivery(site_a: AdminService) -> None:
    """A renewed lease is not taken over where the first one would have ended."""
    store = site_a.store
    ids = queue(store, 1)
    with store.write() as conn:
        claims.take(conn, ids, "ServerA", 10.0, LEASE)
        claims.renew(conn, ids, "ServerA", 10.0 + 2 * LEASE)
        claims.renew(conn, ids, "ServerB", 0.0)  # someone else's renewal changes nothing
    with store.write() as conn:
        assert claims.take(conn, ids, "ServerB", 10.0 + LEASE + 1, LEASE) == []


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    store = open_store(pg_url)
    upgrade(store)
    yield store
    store.close()


@pytest.mark.postgresql_only
def test_claims_take_skips_rows_another_server_is_taking(site_a: AdminService) -> None:
    """While A's transaction holds some message rows, B's take returns at once with the
    others: two servers split the queue instead of waiting on each other's locks."""
    store = site_a.store
    ids = queue(store, 6)
    a_has_taken, b_done = threading.Event(), threading.Event()
    taken: dict[str, list[str]] = {}

    def server_a() -> None:
        with store.write() as conn:
            taken["A"] = claims.take(conn, ids[:3], "ServerA", 10.0, LEASE)
            a_has_taken.set()
            b_done.wait(20)  # holds its locks until B has finished

    thread = threading.Thread(target=server_a)
    thread.start()
    assert a_has_taken.wait(20)
    with store.write() as conn:
        taken["B"] = claims.take(conn, ids, "ServerB", 10.0, LEASE)
    b_done.set()
    thread.join(20)
    assert taken == {"A": ids[:3], "B": ids[3:]}


def test_claims_on_postgresql_whatever_the_run_database(pg_store: Store) -> None:
    """The lease rule holds on PostgreSQL in a run on SQLite too (the multi-server tests')."""
    ids = queue(pg_store, 2)
    with pg_store.write() as conn:
        assert claims.take(conn, ids, "ServerA", 10.0, LEASE) == ids
    with pg_store.write() as conn:
        assert claims.take(conn, ids, "ServerB", 11.0, LEASE) == []
        assert claims.take(conn, ids, "ServerB", 11.0 + LEASE, LEASE) == ids
