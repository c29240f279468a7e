"""A message behind a `queue.content.Content` handle, for tests: bytes read a chunk at a time."""

from __future__ import annotations


class BytesSource:
    """A `content.Source` over bytes (as a spool file or a queue row would be), counting reads."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    def read_at(self, offset: int, size: int) -> bytes:
        self.reads += 1
        return self.data[offset : offset + size]
