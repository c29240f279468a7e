"""Tracking across sites without a network: two sites' Replicators exchanging track-queries
and track-answers by hand (the queue's part is taken out of the picture)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from tests.support.databases import new_database_url

from sitemail.admin.service import AdminService
from sitemail.core.errors import InvalidValueError, NotFoundError
from sitemail.queue.admin import message_events
from sitemail.queue.records import TrackEvent, track
from sitemail.replication import state, tracking
from sitemail.replication.codec import MessageType
from sitemail.replication.replicator import Replicator, dsa_address
from sitemail.store.tables import queue_message

MID = "<m1@outside.test>"


def make(root: Path, name: str) -> AdminService:
    return AdminService.init(
        root / name,
        org="ExchangeORG",
        site=name,
        server=f"Server{name[-1]}",
        domain=f"{name.lower()}.example.com",
        listen=["127.0.0.1"],
        database_url=new_database_url(),
    )


def take_queued(service: AdminService) -> list[bytes]:
    """What the site queued (oldest first), removed from its queue as if sent."""
    with service.store.write() as conn:
        rows = conn.execute(select(queue_message).order_by(queue_message.c.received_at)).all()
        conn.execute(delete(queue_message))
    return [bytes(r.content) for r in rows]


def log(service: AdminService, *events: tuple[float, str, str, str]) -> None:
    """Tracking events (at, event, queue id, recipient) of message MID at `service`'s site."""
    site = service.org().local_site
    with service.store.write() as conn:
        track(
            conn,
            [
                TrackEvent(at, kind, qid, MID, "a@outside.test", rcpt, site, "")
                for at, kind, qid, rcpt in events
            ],
        )


@pytest.fixture
def sites(tmp_path: Path) -> tuple[AdminService, Replicator, AdminService, Replicator]:
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
    yield a, a.replication.replicator(), b, b.replication.replicator()
    a.close()
    b.close()


def receive(service: AdminService, replicator: Replicator, raw: bytes) -> str:
    with service.store.write() as conn:
        return replicator.receive(conn, raw).outcome


def test_tracking_query_is_answered_and_the_path_merges_both_sites(
    sites: tuple[AdminService, Replicator, AdminService, Replicator],
) -> None:
    """A asks B about a Message-ID; B answers with its events; A's path has both sites'
    events by time, each naming its site; no replication watermark moves."""
    a, ra, b, rb = sites
    log(a, (100.0, "received", "AQ1", ""), (102.0, "relayed", "AQ1", "u@siteb.example.com"))
    log(b, (101.0, "received", "BQ1", ""), (103.0, "delivered", "BQ1", "u@siteb.example.com"))
    asked = a.tracking.ask_sites("aq1")  # a queue id, resolved to its Message-ID
    assert (asked.message_id, asked.asked, asked.skipped) == (MID, ("SiteB",), ())
    before = a.tracking.path(MID)
    assert before.pending == ("SiteB",)
    assert [e.site for e in before.events] == ["SiteA", "SiteA"]
    (query,) = take_queued(a)
    assert receive(b, rb, query) == "track-answered"
    (answer,) = take_queued(b)
    assert f"To: {dsa_address('sitea.example.com')}".encode() in answer
    assert receive(a, ra, answer) == "track-taken"
    path = a.tracking.path(MID)
    assert (path.token, path.answered, path.pending) == (asked.token, ("SiteB",), ())
    assert [(e.at, e.site, e.event) for e in path.events] == [
        (100.0, "SiteA", "received"),
        (101.0, "SiteB", "received"),
        (102.0, "SiteA", "relayed"),
        (103.0, "SiteB", "delivered"),
    ]
    for service, peer in ((a, "SiteB"), (b, "SiteA")):
        with service.store.read() as conn:
            row = state.get_peer(conn, peer)
        assert (row.hw_request, row.hw_answer) == (0, 0)


def test_tracking_replays_are_refused_and_unknown_tokens_ignored(
    sites: tuple[AdminService, Replicator, AdminService, Replicator],
) -> None:
    """The same query or answer twice is a counted replay that makes nothing; a verified
    answer to a token never sent to its site is ignored and stores nothing."""
    a, ra, b, rb = sites
    log(b, (101.0, "delivered", "BQ1", "u@siteb.example.com"))
    a.tracking.ask_sites(MID)
    (query,) = take_queued(a)
    receive(b, rb, query)
    (answer,) = take_queued(b)
    assert receive(b, rb, query) == "rejected"
    assert take_queued(b) == []  # no second answer
    receive(a, ra, answer)
    assert receive(a, ra, answer) == "rejected"
    assert b.replication.status().rejected == {"replay": 1}
    assert a.replication.status().rejected == {"replay": 1}
    assert len(a.tracking.path(MID).events) == 1
    with b.store.write() as conn:  # B answers a query A never sent
        rb._queue(
            conn,
            MessageType.TRACK_ANSWER,
            "SiteA",
            dsa_address("sitea.example.com"),
            {"token": "e" * 32, "message_id": MID, "events": [], "truncated": False},
        )
    (stray,) = take_queued(b)
    assert receive(a, ra, stray) == "ignored"
    assert len(a.tracking.path(MID).events) == 1
    assert a.replication.status().rejected == {"replay": 1}


def test_tracking_answer_with_malformed_events_is_refused(
    sites: tuple[AdminService, Replicator, AdminService, Replicator],
) -> None:
    """Events that are not a bounded list of well-typed events: refused as malformed."""
    a, ra, b, rb = sites
    token = a.tracking.ask_sites(MID).token
    take_queued(a)
    bad = [{"at": "yesterday", "event": "delivered"}]
    for events in (bad, [{"at": 1.0, "event": "x"}] * (tracking.MAX_EVENTS + 1), "nope"):
        with b.store.write() as conn:
            rb._queue(
                conn,
                MessageType.TRACK_ANSWER,
                "SiteA",
                dsa_address("sitea.example.com"),
                {"token": token, "message_id": MID, "events": events},
            )
        (raw,) = take_queued(b)
        assert receive(a, ra, raw) == "rejected"
    assert a.replication.status().rejected == {"malformed": 3}
    assert a.tracking.path(MID).pending == ("SiteB",)


def test_tracking_resolve_and_path_errors(
    sites: tuple[AdminService, Replicator, AdminService, Replicator],
) -> None:
    """An unknown queue id is not found; a Message-ID unknown here can still be asked for,
    but has no path until a site was asked; an empty reference is a bad value."""
    a, *_ = sites
    with pytest.raises(NotFoundError):
        a.tracking.resolve("0123456789ABCDEF")
    with pytest.raises(InvalidValueError):
        a.tracking.resolve("  ")
    assert a.tracking.resolve("x@y.test") == "<x@y.test>"
    with pytest.raises(NotFoundError):
        a.tracking.path("<x@y.test>")
    a.tracking.ask_sites("x@y.test")
    assert a.tracking.path("x@y.test").pending == ("SiteB",)


def test_message_events_keeps_the_latest_when_bounded(tmp_path: Path) -> None:
    """More events than an answer carries: the latest are kept and the cut is said."""
    service = make(tmp_path, "SiteA")
    log(service, *((float(i), "deferred", "Q1", f"r{i}@x.test") for i in range(250)))
    with service.store.read() as conn:
        events, truncated = message_events(conn, "m1@outside.test", limit=tracking.MAX_EVENTS)
        everything, cut = message_events(conn, MID)
    assert (truncated, cut) == (True, False)
    assert (len(events), len(everything)) == (tracking.MAX_EVENTS, 250)
    assert (events[0].at, events[-1].at) == (50.0, 249.0)
    service.close()


def test_tracking_asks_only_sites_it_can_address_and_verify(
    sites: tuple[AdminService, Replicator, AdminService, Replicator],
) -> None:
    """A site known without a key to verify its answers, or without a routing address, is
    not asked: it is listed as skipped with the reason."""
    a, *_ = sites
    objects = {
        "SiteY": {"organization": "ExchangeORG", "public_key": a.site_key()[0]},
        "SiteZ": {"organization": "ExchangeORG", "routing_domain": "sitez.example.com"},
    }
    a.import_directory(
        json.dumps(
            {
                "guid": str(uuid.uuid4()),
                "site": name,
                "kind": "site",
                "name": name,
                "display_name": name,
                "attrs": attrs,
                "usn_changed": 0,
                "version": 1,
                "is_deleted": False,
            }
        )
        for name, attrs in objects.items()
    )
    asked = a.tracking.ask_sites(MID)
    assert asked.asked == ("SiteB",)
    assert [(s.site, s.reason.split(" ")[:2]) for s in asked.skipped] == [
        ("SiteY", ["no", "routing"]),
        ("SiteZ", ["no", "verified"]),
    ]
    assert len(take_queued(a)) == 1
