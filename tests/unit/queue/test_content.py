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


def test_content_chunks_after_and_first_read_from_an_offset_and_to_a_size() -> None:
    """What lies below a header field (a trace digest) and a long header's start, read in
    chunks from a handle; the same octets as from bytes."""
    header = b"X-Long: " + b"h" * (HEAD_LIMIT + 10) + b"\r\n\r\n"
    message = header + b"body\r\n" * 100_000
    content = Content.behind(BytesSource(message), len(message), message[:HEAD_LIMIT])
    prefixed = content.with_prefix(b"P: 1\r\n")
    for handle, octets in ((prefixed, b"P: 1\r\n" + message), (Content.of(message), message)):
        assert b"".join(handle.chunks_after(3)) == octets[3:]
        assert b"".join(handle.chunks_after(CHUNK + 5)) == octets[CHUNK + 5 :]
        assert handle.first(len(header) + 6) == octets[: len(header) + 6]
    assert content.head == message[:HEAD_LIMIT]  # no header end within the head
