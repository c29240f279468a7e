"""A message's content as the queue and its transports hold it: bytes, or a handle read in chunks.

One job: give every stage one value for "the message", whatever its size, so that no stage
holds a big message whole in memory. Most mail is small and stays plain bytes in memory (the
fast path, unchanged); a message over `MEMORY_LIMIT` is a handle on where it lies: the file
DATA was spooled to while it arrived (`FileSource`), or its queue row (`StoredSource`, read
with SQLite's incremental blob I/O). Either way:
- `head` holds at least the header section (cut at `HEAD_LIMIT` octets): what the parts that
  read only the header need (trace sites, Received count, Message-ID, DSNs with headers);
- `chunks()` (blocking, for store threads) and `stream()` (async: reads run in a thread) give
  the octets in order, `CHUNK` at a time (`chunks_after` from an offset: a digest of what lies
  below a trace field; `first` the start, for a header longer than `head`);
- `with_prefix()` puts header lines in front (the Received header, the sites' trace field)
  without copying the body.

`MEMORY_LIMIT` equals the DSN's cap on a returned original (dsn.DEFAULT_MAX_ORIGINAL): a
message big enough to be a handle is never returned whole in a bounce, only its headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Protocol

from sitemail.store.blobs import CHUNK, read_detached
from sitemail.store.engine import Store
from sitemail.store.tables import queue_message

__all__ = [
    "CHUNK",
    "HEAD_LIMIT",
    "MEMORY_LIMIT",
    "Content",
    "FileSource",
    "Source",
    "StoredSource",
    "header_end",
]

MEMORY_LIMIT = 1024 * 1024  # octets: a message up to this size is kept whole in memory
HEAD_LIMIT = 256 * 1024  # octets of a big message's start kept in memory for its header


class Source(Protocol):
    """Where a big message's body lies; `read_at` blocks (call it in a thread)."""

    def read_at(self, offset: int, size: int) -> bytes: ...


def header_end(data: bytes) -> int:
    """The offset just past the header section's blank line, or -1 if `data` has none."""
    end = data.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


@dataclass(frozen=True, slots=True)
class Content:
    """One message: `prefix` + body, the body in memory (`data`) or behind a `source`."""

    data: bytes = b""  # the body when it is in memory
    source: Source | None = None
    body_size: int = 0
    body_head: bytes = b""  # with a source: the body's first octets, its header at least
    prefix: bytes = b""

    @staticmethod
    def of(data: bytes) -> Content:
        """A message held in memory."""
        return Content(data=data, body_size=len(data))

    @staticmethod
    def behind(source: Source, size: int, head: bytes) -> Content:
        """A message of `size` octets read from `source`; `head` is its start."""
        end = header_end(head[:HEAD_LIMIT])
        return Content(
            source=source, body_size=size, body_head=head[: end if end > 0 else HEAD_LIMIT]
        )

    @property
    def size(self) -> int:
        return len(self.prefix) + self.body_size

    @property
    def in_memory(self) -> bool:
        return self.source is None

    @property
    def head(self) -> bytes:
        """At least the header section (all of a message in memory; a big one's first part)."""
        body = self.data if self.source is None else self.body_head
        return self.prefix + body if self.prefix else body

    @property
    def queue_id(self) -> str:
        """The queue row holding the body (without the prefix), or "" when not stored."""
        return self.source.queue_id if isinstance(self.source, StoredSource) else ""

    def with_prefix(self, lines: bytes) -> Content:
        """This message with header lines in front (the body is not copied)."""
        return Content(self.data, self.source, self.body_size, self.body_head, lines + self.prefix)

    def whole(self) -> bytes:
        """Every octet at once: for small messages, and stores that take values whole."""
        if self.source is None:
            return self.prefix + self.data if self.prefix else self.data
        return b"".join(self.chunks())

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The octets in order, at most `size` at a time after the prefix (blocking)."""
        if self.prefix:
            yield self.prefix
        if self.source is None:
            view = memoryview(self.data)
            for start in range(0, len(view), size):
                yield bytes(view[start : start + size])
            return
        for start in range(0, self.body_size, size):
            chunk = self.source.read_at(start, min(size, self.body_size - start))
            if not chunk:
                raise OSError(f"message content ends at {start} of {self.body_size} octets")
            yield chunk

    def chunks_after(self, start: int) -> Iterator[bytes]:
        """`chunks()` from octet `start` on (blocking): what lies below a header field."""
        for chunk in self.chunks():
            if start >= len(chunk):
                start -= len(chunk)
                continue
            yield chunk[start:] if start else chunk
            start = 0

    def first(self, size: int) -> bytes:
        """The first `size` octets (fewer if it is shorter); blocking for a big message when
        they reach past `head` (a header section longer than `HEAD_LIMIT`)."""
        head = self.head
        if self.source is None or size <= len(head):
            return head[:size]
        out = bytearray()
        for chunk in self.chunks():
            out += chunk[: size - len(out)]
            if len(out) >= size:
                break
        return bytes(out)

    async def stream(self, size: int = CHUNK) -> AsyncIterator[bytes]:
        """`chunks()` for the event loop: a source's reads run in a thread."""
        source = self.source
        if source is None:
            for chunk in self.chunks(size):
                yield chunk
            return
        if self.prefix:
            yield self.prefix
        for start in range(0, self.body_size, size):
            count = min(size, self.body_size - start)
            chunk = await asyncio.to_thread(source.read_at, start, count)
            if not chunk:
                raise OSError(f"message content ends at {start} of {self.body_size} octets")
            yield chunk


class FileSource:
    """An open file holding a body (the spool file of a message still arriving).

    It reads through its own duplicate of the descriptor, closed when it is garbage: a
    writer job still copying the message when its session ends (a stop, a lost client)
    never reads a closed descriptor, or one since reused for another file."""

    def __init__(self, fd: int) -> None:
        self.fd = os.dup(fd)

    def read_at(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class StoredSource:
    """The content column of a committed queue row, read a chunk at a time on the thread's
    blob reader (no snapshot is held while the next hop takes its time, and no pooled
    connection's page cache fills with the message: store/blobs.read_detached)."""

    def __init__(self, store: Store, queue_id: str) -> None:
        self.store = store
        self.queue_id = queue_id

    def read_at(self, offset: int, size: int) -> bytes:
        return read_detached(
            self.store,
            queue_message.c.content,
            (queue_message.c.queue_id, self.queue_id),
            offset,
            size,
        )
