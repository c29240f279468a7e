"""Big messages end to end over real sockets: streamed, stored and sent on byte for byte.

Two real sites (SiteA and SiteB on 127.23.0.x, real SQLite, real SMTP between them): a
message of tens of megabytes sent to SiteA for a mailbox there and one at SiteB is spooled
while DATA arrives, queued with blob I/O, copied into SiteA's mailbox inside the database and
relayed to SiteB a chunk at a time. Both mailboxes end with exactly the octets the client
sent (after SMTP's dot-unstuffing), and the spool directory is left empty. The sites run in
the test's process, so tracemalloc sees every Python allocation of both: at its peak it holds
far less than the message (SQLite's own page cache is not Python's, and is bounded).
"""

from __future__ import annotations

import asyncio
import smtplib
import tracemalloc
from pathlib import Path

from sqlalchemy import func, select
from tests.support.org import Site, organisation, until

from sitemail.directory import ObjectKind
from sitemail.site import SPOOL_DIR
from sitemail.store.tables import mail_message

ADDRESSES = {"SiteA": "127.23.0.1", "SiteB": "127.23.0.2"}
MESSAGE_SIZE = 64 * 1024 * 1024  # [limits] message_size of both sites
BIG = 24 * 1024 * 1024
PEAK_LIMIT = 12 * 1024 * 1024  # half the message: a whole copy anywhere would exceed it


def big_message(size: int, tag: str) -> bytes:
    """A message of about `size` octets; lines that start with a dot (SMTP doubles them) and
    8-bit octets included, every line ending in CRLF."""
    head = (
        f"From: <sender@outside.test>\r\nTo: <alice@sitea.example.com>\r\n"
        f"Subject: big {tag}\r\nMessage-ID: <big.{tag}@outside.test>\r\n\r\n"
    ).encode()
    lines = [
        b".a line that starts with a dot and must come back with one\r\n",
        ("caf\u00e9 " * 12).encode("utf-8") + b"\r\n",
        b"x" * 996 + b"\r\n",  # the longest line allowed (998 octets and CRLF)
        b"..two dots\r\n",
    ]
    block = b"".join(lines)
    count = max(1, (size - len(head)) // len(block))
    return head + b"".join(block.replace(b"line", b"line %08d" % n) for n in range(count))


def raise_size_limit(site: Site) -> None:
    """[limits] message_size above the test's messages, through the config file."""
    path = site.data_dir / "sitemail.toml"
    text = path.read_text(encoding="utf-8")
    assert "\n[limits]\n" in text
    path.write_text(
        text.replace("\n[limits]\n", f"\n[limits]\nmessage_size = {MESSAGE_SIZE}\n", 1),
        encoding="utf-8",
    )


def send(site: Site, recipients: list[str], wire: bytes) -> None:
    """One transaction; `wire` is the message already dot-stuffed (nothing copied here)."""
    with smtplib.SMTP(site.address, site.port, local_hostname="client.test", timeout=60) as c:
        assert c.ehlo()[0] == 250
        assert c.mail("sender@outside.test")[0] == 250
        for rcpt in recipients:
            assert c.rcpt(rcpt)[0] == 250
        assert c.putcmd("DATA") is None
        assert c.getreply()[0] == 354
        view = memoryview(wire)
        for start in range(0, len(view), 65536):
            c.sock.sendall(view[start : start + 65536])
        c.sock.sendall(b".\r\n")
        code, text = c.getreply()
    assert code == 250, text


def mailbox_count(site: Site) -> int:
    with site.service.store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(mail_message)).scalar_one())


def test_big_message_stored_delivered_and_relayed_byte_identical(tmp_path: Path) -> None:
    """A 24 MB message for a local mailbox and one at another site arrives whole and
    byte-identical in both (delivered locally from the queue, relayed to the other site)."""
    message = big_message(BIG, "one")
    wire = message.replace(b"\r\n.", b"\r\n..")

    async def scenario() -> tuple[bytes, bytes, list[Path], int]:
        async with organisation(tmp_path, ADDRESSES) as org:
            a, b = org.create("SiteA"), org.create("SiteB")
            a.service.add_recipient(ObjectKind.MAILBOX, "alice", display_name="Alice")
            b.service.add_recipient(ObjectKind.MAILBOX, "bob", display_name="Bob")
            org.link(a, b)
            for site in (a, b):
                raise_size_limit(site)
                await org.start(site)
            tracemalloc.start()
            try:
                recipients = ["alice@sitea.example.com", "bob@siteb.example.com"]
                await asyncio.to_thread(send, a, recipients, wire)
                await until(lambda: mailbox_count(a) == mailbox_count(b) == 1, limit=120)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            leftovers = list((a.data_dir / SPOOL_DIR).iterdir())
            return a.inbox("alice")[0].content, b.inbox("bob")[0].content, leftovers, peak

    at_a, at_b, leftovers, peak = asyncio.run(scenario())
    assert at_a.startswith(b"Return-Path: <sender@outside.test>\r\nDelivered-To: alice@")
    assert at_a.endswith(message)
    assert at_b.endswith(message)
    trace = at_b[: len(at_b) - len(message)]
    assert trace.count(b"Received: from") == 2  # one by each site, nothing else added
    assert leftovers == []
    assert peak < PEAK_LIMIT, f"{peak} octets held at the peak for a {len(message)}-octet message"
