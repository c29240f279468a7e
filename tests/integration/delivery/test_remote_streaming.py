"""A big message relayed a chunk at a time to Postfix's smtp-sink, which dumps what it got.

The remote transport sends a message that is not in memory (a handle read in chunks) to
smtp-sink on 127.23.0.30, with PIPELINING and without it (`-p`): both ways the dump holds the
message byte for byte (smtp-sink undoes the dot-stuffing and writes LF line ends).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from tests.support.content import BytesSource
from tests.support.processes import SMTP_SINK, postfix_sink

from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.delivery.remote import RemoteDelivery
from sitemail.queue.content import Content
from sitemail.queue.model import Outcome, QueuedMessage, QueuedRecipient, QueueId
from sitemail.routing.resolver import NoDnsResolver
from sitemail.routing.route import Route, Transport

SINK_HOST = "127.23.0.30"
LINES = (
    b".a line that starts with a dot\r\n",
    b"..and one with two\r\n",
    b"x" * 990 + b"\r\n",
    ("\u00e9t\u00e9 " * 20).encode() + b"\r\n",
)
MESSAGE = b"Subject: big relay\r\nMessage-ID: <big.relay@sitea.test>\r\n\r\n" + b"".join(LINES) * (
    6 * 1024 * 1024 // len(b"".join(LINES))
)

pytestmark = [
    pytest.mark.postfix,
    pytest.mark.skipif(SMTP_SINK is None, reason="Postfix's smtp-sink is not installed"),
]


@pytest.mark.parametrize("flags", [(), ("-p",)], ids=["pipelining", "no-pipelining"])
def test_remote_streams_a_big_message_byte_identical_to_smtp_sink(
    tmp_path: Path, flags: tuple[str, ...]
) -> None:
    """A 6 MB message behind a handle arrives whole at smtp-sink, read in many chunks."""
    source = BytesSource(MESSAGE)
    content = Content.behind(source, len(MESSAGE), MESSAGE[:4096])
    envelope = Envelope("alice@sitea.test", (EnvelopeRecipient("bob@remote.test"),))
    queued = QueuedMessage(QueueId("Q1"), envelope, 0.0, len(MESSAGE), "<big.relay>", False)

    with postfix_sink(tmp_path, SINK_HOST, *flags) as (port, dump):

        async def scenario() -> Outcome:
            delivery = RemoteDelivery(NoDnsResolver(), helo_name="sitea.test", data_timeout=60.0)
            try:
                rcpt = QueuedRecipient(1, queued.queue_id, envelope.recipients[0], 0, None, False)
                route = Route(Transport.RELAY, f"{SINK_HOST}:{port}", "bob@remote.test")
                [result] = await delivery.deliver(queued, content, [(rcpt, route)])
                return result.outcome
            finally:
                await delivery.aclose()

        outcome = asyncio.run(scenario())
        deadline = time.monotonic() + 10
        while MESSAGE[-40:].replace(b"\r\n", b"\n") not in dump.read_bytes():
            assert time.monotonic() < deadline, "the dump never got the end of the message"
            time.sleep(0.1)
    assert outcome is Outcome.DELIVERED
    assert MESSAGE.replace(b"\r\n", b"\n") in dump.read_bytes()
    assert source.reads > 20
