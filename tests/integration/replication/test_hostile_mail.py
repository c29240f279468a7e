"""Mail no parser can read, sent to a site over real SMTP, is refused or dropped (issue 19).

A message nested 3,000 MIME levels deep made the replication codec raise RecursionError; the
message was retried and ended in a delay notice and a failure DSN to its (forged) sender.
Now: to a directory-service mailbox it is consumed, counted as `malformed` and never notified;
to anyone else it is refused at DATA with 550 5.6.0.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest

from sitemail.directory import ObjectKind

from .conftest import Site, organisation, until

ADDRESSES = {"SiteA": "127.28.0.1", "SiteB": "127.28.0.2", "SiteC": "127.28.0.3"}
FORGED = "victim@outside.test"  # the sender the attacker names; it must never get mail


def nested(depth: int, message_id: str) -> bytes:
    """A message whose MIME parts are nested `depth` multiparts deep."""
    head = (
        f"From: {FORGED}\r\nTo: sitemail-dsa@sitea.example.com\r\nSubject: deep\r\n"
        f"Message-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
    ).encode()
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    return head + opening + b"Content-Type: text/plain\r\n\r\nhello\r\n" + closing


def send(site: Site, recipient: str, raw: bytes) -> None:
    with smtplib.SMTP(site.address, site.port, local_hostname="attacker.test", timeout=30) as c:
        c.ehlo()
        c.sendmail(FORGED, [recipient], raw, rcpt_options=["NOTIFY=SUCCESS,FAILURE,DELAY"])


def test_nested_replication_mail_with_a_forged_sender_is_dropped_and_counted(
    tmp_path: Path,
) -> None:
    """3,000 nested parts to sitemail-dsa@ from a forged sender: accepted, then consumed at
    once, counted as malformed in `replication status`, and no notice of any kind queued."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a = org.create("SiteA")
            await org.start(a)
            before = a.service.replication.status().rejected.get("malformed", 0)
            message_id = "<deep-3000@outside.test>"
            raw = nested(3000, message_id)
            await asyncio.to_thread(send, a, "sitemail-dsa@sitea.example.com", raw)
            await until(
                lambda: a.service.replication.status().rejected.get("malformed", 0) == before + 1,
                what="the nested message counted as malformed",
            )
            await until(lambda: not a.service.queue.entries(), what="A's queue empty")
            events = a.service.queue.track(message_id)
            assert [e.event for e in events if e.event == "dsn"] == []
            assert any("malformed" in e.detail for e in events if e.event == "delivered")
            assert not a.service.queue.entries()  # no notice waits to go to the forged sender

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_junk_to_the_directory_mailbox_never_makes_a_success_notice(tmp_path: Path) -> None:
    """A message the mailbox consumes is 'delivered': with NOTIFY=SUCCESS it made a success
    DSN to the sender it named (a reflection anyone could aim). NOTIFY=NEVER is forced."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a = org.create("SiteA")
            await org.start(a)
            message_id = "<junk@outside.test>"
            junk = f"From: {FORGED}\r\nMessage-ID: {message_id}\r\n\r\nnot ours\r\n"
            await asyncio.to_thread(send, a, "sitemail-dsa@sitea.example.com", junk.encode())
            await until(
                lambda: any(e.event == "delivered" for e in a.service.queue.track(message_id)),
                what="the junk consumed",
            )
            await until(lambda: not a.service.queue.entries(), what="A's queue empty")
            assert [e for e in a.service.queue.track(message_id) if e.event == "dsn"] == []

    asyncio.run(asyncio.wait_for(scenario(), 120))


def big_nested(depth: int, message_id: str) -> bytes:
    """`nested(depth)` as the second part of a 3 MB multipart: the nesting lies far past the
    start kept in memory, in the file DATA was spooled to."""
    deep = nested(depth, message_id).partition(b"MIME-Version: 1.0\r\n")
    filler = b"a line of text to make the message big enough to be spooled\r\n" * 50_000
    return (
        deep[0]
        + deep[1]
        + b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        + b"--outer\r\nContent-Type: text/plain\r\n\r\n"
        + filler
        + b"--outer\r\n"
        + deep[2]
        + b"--outer--\r\n"
    )


@pytest.mark.parametrize("make", [nested, big_nested], ids=["in-memory", "spooled"])
def test_nested_mail_to_a_user_is_refused_at_data(
    tmp_path: Path, make: Callable[[int, str], bytes]
) -> None:
    """The same nesting to a mailbox is refused with 550 5.6.0: nothing is queued, so no
    reader behind the queue meets it and no notice can follow. A 3 MB one, spooled to a file
    as it arrives, with its nesting past the first MB, is refused the same way."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a = org.create("SiteA")
            a.service.add_recipient(ObjectKind.MAILBOX, "alice", display_name="Alice")
            await org.start(a)
            raw = make(3000, "<deep-user@outside.test>")
            with pytest.raises(smtplib.SMTPDataError) as refused:
                await asyncio.to_thread(send, a, "alice@sitea.example.com", raw)
            assert refused.value.smtp_code == 550
            assert refused.value.smtp_error.startswith(b"5.6.0")
            assert b"nested deeper than 100" in refused.value.smtp_error
            assert not a.service.queue.entries()
            ok = make(20, "<shallow@outside.test>")
            await asyncio.to_thread(send, a, "alice@sitea.example.com", ok)  # within bounds

    asyncio.run(asyncio.wait_for(scenario(), 120))
