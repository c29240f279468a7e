"""Content: bytes or a handle read in chunks, with its head and prefix (queue/content.py)."""

from __future__ import annotations

import asyncio

from tests.support.content import BytesSource

from sitemail.queue.content import CHUNK, HEAD_LIMIT, Content

MESSAGE = b"Subject: s\r\nMessage-ID: <m@x>\r\n\r\n" + b"line\r\n" * 200_000


async def collect(content: Content) -> bytes:
    return b"".join([chunk async for chunk in content.stream()])


def test_content_behind_a_source_reads_every_octet_in_chunks() -> None:
    """A handle gives the prefix and then the source's octets, a chunk per read."""
    source = BytesSource(MESSAGE)
    content = Content.behind(source, len(MESSAGE), MESSAGE[:HEAD_LIMIT]).with_prefix(b"P: 1\r\n")
    assert content.size == len(MESSAGE) + 6
    assert not content.in_memory
    assert content.whole() == b"P: 1\r\n" + MESSAGE
    assert source.reads == -(-len(MESSAGE) // CHUNK)
    assert asyncio.run(collect(content)) == b"P: 1\r\n" + MESSAGE


def test_content_head_holds_the_header_section_only_for_a_handle() -> None:
    """A handle keeps its header in memory, not the body; bytes are their own head."""
    content = Content.behind(BytesSource(MESSAGE), len(MESSAGE), MESSAGE[:HEAD_LIMIT])
    assert content.head == b"Subject: s\r\nMessage-ID: <m@x>\r\n\r\n"
    assert Content.of(MESSAGE).head is MESSAGE
    assert Content.of(b"x").with_prefix(b"A: b\r\n").whole() == b"A: b\r\nx"


def test_content_short_source_is_an_error_not_a_truncated_message() -> None:
    """A source that ends early raises: a message is never sent cut short."""
    content = Content.behind(BytesSource(MESSAGE[:1000]), len(MESSAGE), MESSAGE[:1000])
    try:
        content.whole()
    except OSError:
        return
    raise AssertionError("a short source must raise")
