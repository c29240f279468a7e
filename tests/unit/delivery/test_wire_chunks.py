"""The remote transport's DATA stream of a big message, chunk by chunk (wire_chunks)."""

from __future__ import annotations

import asyncio
import re

from aiosmtplib.protocol import normalize_message_line_endings
from tests.support.content import BytesSource

from sitemail.delivery.remote import wire_chunks, wire_digest
from sitemail.queue.content import CHUNK, Content
from sitemail.routing.trace import content_digest


def on_the_wire(message: bytes) -> bytes:
    content = Content.behind(BytesSource(message), len(message), message[:1000])

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in wire_chunks(content)])

    return asyncio.run(collect())


def reference(message: bytes) -> bytes:
    """The whole-message transformation the in-memory path applies."""
    return re.sub(rb"(?m)^\.", b"..", normalize_message_line_endings(message))


def test_wire_chunks_doubles_leading_dots_across_chunk_boundaries() -> None:
    """Dots that start lines are doubled wherever the chunks are cut, and nothing else changes."""
    line = b".dotted line of some length\r\n"
    message = b"Subject: dots\r\n\r\n" + line * (3 * CHUNK // len(line)) + b"end\r\n"
    assert on_the_wire(message) == reference(message)


def test_wire_chunks_ends_the_last_line_and_fixes_bare_line_ends() -> None:
    """Bare LF become CRLF; a message without a final line end gets one."""
    message = b"A: b\n\n" + b"x\ny\r\n" * CHUNK + b"no end"
    wire = on_the_wire(message)
    assert wire == reference(message)
    assert wire.endswith(b"no end\r\n")


def test_wire_chunks_cuts_an_over_long_line_without_splitting_crlf() -> None:
    """A line longer than the carry limit is sent in pieces; a dot inside it is not doubled."""
    message = b"Subject: long\r\n\r\n" + b"y" * (3 * 1024 * 1024) + b".y\r\n.z\r\n"
    assert on_the_wire(message) == reference(message)


def test_wire_digest_is_the_digest_of_the_message_as_sent_before_stuffing() -> None:
    """The trace signature's digest of a big message, read in chunks, is the one the whole
    message gives (bare line ends fixed, the last line ended, dots not doubled)."""
    message = b"A: b\n\n" + b".x\ny\r\n" * CHUNK + b"z" * (2 * 1024 * 1024) + b"no end"
    content = Content.behind(BytesSource(message), len(message), message[:1000])
    assert wire_digest(content) == content_digest(normalize_message_line_endings(message))
