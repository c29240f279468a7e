"""Queue records: the start-up sweep of messages a crash left finished but queued."""

from __future__ import annotations

from sitemail.admin.service import AdminService
from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.queue.content import Content
from sitemail.queue.model import QueueId, RcptState
from sitemail.queue.records import (
    NewMessage,
    close_finished,
    finish_recipient,
    insert_message,
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
