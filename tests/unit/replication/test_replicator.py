"""The protocol without a network: two sites' Replicators exchanging queued messages by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import delete, select
from tests.support.databases import new_database_url

from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind
from sitemail.replication import state
from sitemail.replication.codec import _extract, _inflate, canonical
from sitemail.replication.replicator import Replicator
from sitemail.store.tables import queue_message


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


def test_replicator_asks_again_when_an_exchange_ends_with_a_gap(tmp_path: Path) -> None:
    """An answer lost in the middle of a chain is noticed at the end and fetched again."""
    a, ra, b, rb = pair(tmp_path, batch=2)
    for i in range(5):
        a.add_recipient(ObjectKind.MAILBOX, f"u{i}", display_name=f"U {i}")
    b.replication.request_now("SiteA")
    lost = False
    while True:
        requests = take_queued(b)
        if not requests:
            break
        for request in requests:
            with a.store.write() as conn:
                ra.receive(conn, request)
        for answer in take_queued(a):
            message = rb.verify(answer)
            if message.body["more"] and not lost:  # the first "more" answer goes missing
                lost = True
                with b.store.write() as conn:
                    rb.ask_ahead(conn, message)
                continue
            with b.store.write() as conn:
                rb.receive(conn, answer, verified=message)
    assert lost
    assert {o.alias for o in b.directory.list_objects(ObjectKind.MAILBOX, site="SiteA")} == {
        f"u{i}" for i in range(5)
    }
    with b.store.read() as conn:
        assert state.get_peer(conn, "SiteA").outstanding_seq is None
        # ...and the watermark covers everything, so the next request starts at the end.
        assert state.watermarks(conn)["SiteA"] == a.directory.highest_usn("SiteA")


def test_replicator_refuses_a_peer_writing_a_naming_context_we_pull_elsewhere(
    tmp_path: Path,
) -> None:
    """B may not answer for SiteC when A pulls SiteC from C itself, whatever B declares."""
    import uuid  # noqa: PLC0415

    from sitemail.replication.codec import MessageType, ReplicationMessage, encode_message  # noqa: PLC0415
    from sitemail.replication.keys import load_site_key  # noqa: PLC0415

    a, ra, b, _ = pair(tmp_path, batch=512)
    c = make(tmp_path, "SiteC")
    a.replication.add_connector(
        "SiteC",
        bridgehead="ServerC",
        routing_address="sitec.example.com",
        peer_key=c.site_key()[0],
        schedule="never",
    )
    forged_object = {
        "guid": str(uuid.uuid4()),
        "site": "SiteC",
        "kind": "mailbox",
        "name": "planted",
        "display_name": "Planted",
        "attrs": {"proxies": ["SMTP:planted@sitec.example.com"]},
        "usn_created": 1,
        "usn_changed": 1,
        "version": 1,
        "is_deleted": False,
        "changed_at": 0.0,
    }
    body = {
        "in_reply_to": 0,
        "ncs": {"SiteC": {"from": 0, "to": 10**9, "high": 10**9}},
        "objects": [forged_object],
        "more": False,
    }
    now = ra.clock.now()
    raw = encode_message(
        ReplicationMessage(
            MessageType.ANSWER, "ExchangeORG", "SiteB", "SiteA", 99, int(now + 60), body
        ),
        load_site_key(b.config.data_dir),
        sender="sitemail-dsa@siteb.example.com",
        recipient="sitemail-dsa@sitea.example.com",
        now=now,
    )
    with a.store.write() as conn:
        ra.receive(conn, raw)
    assert a.directory.lookup("planted@sitec.example.com") is None
    with a.store.read() as conn:
        assert "SiteC" not in state.watermarks(conn)


def assert_canonical(raw: bytes) -> None:
    """The signed payload is canonical JSON: re-encoding what it says gives the same bytes."""
    payload = _inflate(_extract(raw).payload)
    assert canonical(orjson.loads(payload)) == payload


def test_replicator_prefetched_batches_are_used_and_miss_nothing(tmp_path: Path) -> None:
    """The answering side reads the next batch ahead of the request for it; a change made
    meanwhile (an object renamed, one added) still reaches the requester, in a later answer."""
    from sitemail.directory import RecipientChanges  # noqa: PLC0415

    a, ra, b, rb = pair(tmp_path, batch=2)
    for i in range(9):
        a.add_recipient(ObjectKind.MAILBOX, f"u{i}", display_name=f"U {i}")
    used: list[bool] = []
    prefetched = ra._prefetched

    def counting(peer: str, cursors: Any) -> Any:
        found = prefetched(peer, cursors)
        used.append(found is not None)
        return found

    ra._prefetched = counting  # type: ignore[method-assign]
    b.replication.request_now("SiteA")
    rounds = 0
    while requests := take_queued(b):
        rounds += 1
        if rounds == 3:  # batches are being read ahead by now
            a.update_recipient("u0", RecipientChanges(display_name="Renamed"))
            a.add_recipient(ObjectKind.MAILBOX, "late", display_name="Late")
        for request in requests:
            with a.store.write() as conn:
                ra.receive(conn, request)
            ra.start_prefetches()  # as the transport does once the answer is on its way
        for raw in take_queued(a):
            assert_canonical(raw)  # objects read ahead are written into the answer as is
            message = rb.verify(raw)
            with b.store.write() as conn:
                rb.receive(conn, raw, verified=message)
    assert any(used), "no prefetched batch was used"
    held = {o.alias: o for o in b.directory.list_objects(ObjectKind.MAILBOX, site="SiteA")}
    assert set(held) == {f"u{i}" for i in range(9)} | {"late"}
    assert held["u0"].display_name == "Renamed"


def test_replicator_names_a_changed_routing_domain_at_once(tmp_path: Path) -> None:
    """The routing domain our messages name is kept between messages, but a change to this
    site's directory (here the domain itself) is seen by the very next one."""
    a, ra, _, _ = pair(tmp_path, batch=512)

    def sender_of_next_ping() -> str:
        with a.store.write() as conn:
            ra.ping(conn, "SiteB")
        [raw] = take_queued(a)
        return next(line for line in raw.split(b"\r\n") if line.startswith(b"From: ")).decode()

    assert sender_of_next_ping() == "From: sitemail-dsa@sitea.example.com"
    assert sender_of_next_ping() == "From: sitemail-dsa@sitea.example.com"  # kept
    a.directory.update_site_attrs(routing_domain="mail.sitea.example.com")
    assert sender_of_next_ping() == "From: sitemail-dsa@mail.sitea.example.com"
