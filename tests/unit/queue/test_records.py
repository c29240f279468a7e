"""Queue records: the start-up sweep of messages a crash left finished but queued."""

from __future__ import annotations

from sitemail.admin.service import AdminService
from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.queue.model import QueueId, RcptState
from sitemail.queue.records import (
    NewMessage,
    close_finished,
    extract_message_id,
    finish_recipient,
    insert_message,
    load_recipients,
)


def test_close_finished_drops_only_messages_with_nothing_left_to_do(site_a: AdminService) -> None:
    """At start the manager drops messages a crash left with every recipient final."""
    envelope = Envelope("a@outside.test", (EnvelopeRecipient("x@partner.test"),))
    with site_a.store.write() as conn:
        for qid in ("DONE1", "OPEN1"):
            insert_message(conn, QueueId(qid), NewMessage(envelope, b"\r\nx\r\n"), 1.0, "SiteA")
        ((rcpt, _),) = load_recipients(conn, "DONE1")
        finish_recipient(conn, rcpt.id, state=RcptState.DELIVERED, status="2.0.0", text="", now=2)
        assert close_finished(conn) == ["DONE1"]
    assert [e.queue_id for e in site_a.queue.entries()] == ["OPEN1"]


def test_extract_message_id_reads_hostile_headers_without_raising() -> None:
    """Folded, 8-bit, repeated, over-long or absent: the first Message-ID, cut at 998."""
    assert extract_message_id(b"Message-ID:\r\n <a@b>\r\n\r\nMessage-ID: <body@x>") == "<a@b>"
    assert extract_message_id(b"message-id: <\xff@b>\r\nMessage-ID: <c@d>\r\n\r\n") == "<\ufffd@b>"
    assert len(extract_message_id(b"Message-ID: <" + b"a" * 5000 + b"@b>\r\n\r\n")) == 998
    assert extract_message_id(b"Subject: none\r\n" * 1000) == ""
    assert extract_message_id(b"") == ""
