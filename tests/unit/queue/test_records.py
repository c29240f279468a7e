"""Queue records: the start-up sweep of messages a crash left finished but queued, and big
messages written and loaded a chunk at a time."""

from __future__ import annotations

import pytest
from tests.support.content import BytesSource

from sitemail.admin.service import AdminService
from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.queue.content import MEMORY_LIMIT, Content
from sitemail.queue.model import QueueId, RcptState
from sitemail.queue.records import (
    NewMessage,
    close_finished,
    extract_message_id,
    finish_recipient,
    insert_message,
    load_messages,
    load_recipients,
)


def test_close_finished_drops_only_messages_with_nothing_left_to_do(site_a: AdminService) -> None:
    """At start the manager drops messages a crash left with every recipient final."""
    envelope = Envelope("a@outside.test", (EnvelopeRecipient("x@partner.test"),))
    with site_a.store.write() as conn:
        for qid in ("DONE1", "OPEN1"):
            insert_message(
                conn, QueueId(qid), NewMessage(envelope, Content.of(b"\r\nx\r\n")), 1.0, "SiteA"
            )
        ((rcpt, _),) = load_recipients(conn, "DONE1")
        finish_recipient(conn, rcpt.id, state=RcptState.DELIVERED, status="2.0.0", text="", now=2)
        assert close_finished(conn) == ["DONE1"]
    assert [e.queue_id for e in site_a.queue.entries()] == ["OPEN1"]


@pytest.mark.sqlite_only  # blob I/O is SQLite's; PostgreSQL: the test below
def test_big_message_is_stored_whole_and_loaded_as_a_handle(site_a: AdminService) -> None:
    """A message over MEMORY_LIMIT goes into its row by blob I/O; a pass loads its header and
    a handle that reads the rest, and counts only the header against its memory budget."""
    envelope = Envelope("a@outside.test", (EnvelopeRecipient("x@partner.test"),))
    message = b"Message-ID: <big@test>\r\n\r\n" + b"0123456789abcdef\r\n" * MEMORY_LIMIT
    big = Content.behind(BytesSource(message), len(message), message[:4096])
    small = Content.of(b"Message-ID: <small@test>\r\n\r\nhi\r\n")
    with site_a.store.write() as conn:
        insert_message(conn, QueueId("BIG1"), NewMessage(envelope, big), 1.0, "SiteA")
        insert_message(conn, QueueId("SMALL1"), NewMessage(envelope, small), 1.0, "SiteA")
    with site_a.store.read() as conn:
        loaded = load_messages(conn, ["BIG1", "SMALL1"], max_bytes=MEMORY_LIMIT, store=site_a.store)
        whole = load_messages(conn, ["BIG1"])
    (queued, content, _), (_, small_loaded, _) = loaded
    assert queued.message_id == "<big@test>"
    assert queued.size == len(message)
    assert not content.in_memory
    assert content.head == b"Message-ID: <big@test>\r\n\r\n"
    assert content.whole() == message
    assert small_loaded.whole() == small.whole()
    assert whole[0][1].in_memory
    assert whole[0][1].whole() == message


def test_extract_message_id_reads_hostile_headers_without_raising() -> None:
    """Folded, 8-bit, repeated, over-long or absent: the first Message-ID, cut at 998."""
    assert extract_message_id(b"Message-ID:\r\n <a@b>\r\n\r\nMessage-ID: <body@x>") == "<a@b>"
    assert extract_message_id(b"message-id: <\xff@b>\r\nMessage-ID: <c@d>\r\n\r\n") == "<\ufffd@b>"
    assert len(extract_message_id(b"Message-ID: <" + b"a" * 5000 + b"@b>\r\n\r\n")) == 998
    assert extract_message_id(b"Subject: none\r\n" * 1000) == ""
    assert extract_message_id(b"") == ""


@pytest.mark.postgresql_only
def test_big_message_on_postgresql_is_stored_and_loaded_whole(site_a: AdminService) -> None:
    """On PostgreSQL a message over MEMORY_LIMIT goes into its row whole and comes back whole
    and byte for byte (no blob I/O there: docs/ims.md)."""
    envelope = Envelope("a@outside.test", (EnvelopeRecipient("x@partner.test"),))
    message = b"Message-ID: <big@test>\r\n\r\n" + b"0123456789abcdef\r\n" * MEMORY_LIMIT
    big = Content.behind(BytesSource(message), len(message), message[:4096])
    with site_a.store.write() as conn:
        insert_message(conn, QueueId("BIG1"), NewMessage(envelope, big), 1.0, "SiteA")
    with site_a.store.read() as conn:
        ((queued, content, _),) = load_messages(
            conn, ["BIG1"], max_bytes=MEMORY_LIMIT, store=site_a.store
        )
    assert queued.message_id == "<big@test>"
    assert queued.size == len(message)
    assert content.whole() == message
