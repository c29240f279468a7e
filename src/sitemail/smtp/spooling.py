"""Where a message goes while DATA arrives: memory while small, then a spool file.

One job: collect the unstuffed octets of one message and hand them over as one
`queue.content.Content`. Up to `SPILL_LIMIT` they stay in memory (most mail: the fast path
makes no file). Beyond it they go to an anonymous temporary file in `directory` (O_TMPFILE
on Linux: it has no name, so a crash leaves nothing behind; a restart also empties the
directory, for systems without it), written `CHUNK` at a time in a thread, so a session holds
about `SPILL_LIMIT` + `CHUNK` at most, whatever the message's size. (The queue keeps
messages up to `content.MEMORY_LIMIT` in memory once stored; a session needs less.) The file needs no fsync: the
policy copies the message into the queue, whose commit is the durable one, before the 250;
the session closes the file (`close`) once the policy has answered. A file that cannot be
written (disk full, I/O error) makes the message `failed`: the session answers 452 4.3.1
once DATA has ended, and the client tries again later.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import BinaryIO

from sitemail.queue.content import CHUNK, HEAD_LIMIT, Content, FileSource

__all__ = ["SPILL_LIMIT", "BodySink"]

log = logging.getLogger("sitemail.smtp")

SPILL_LIMIT = 256 * 1024  # octets kept in memory before a message goes to a spool file


class BodySink:
    """The octets of one message as they arrive (see the module docstring)."""

    def __init__(self, directory: Path | None) -> None:
        self._directory = directory
        self._runs: list[bytes] = []
        self._held = 0  # octets in `_runs`
        self._file: BinaryIO | None = None
        self._written = 0  # octets in the file
        self._head = b""  # the message's first octets, kept when the file starts
        self._dropped = False
        self.failed = False  # the spool file could not be written: answer 452 4.3.1

    @property
    def flush_due(self) -> bool:
        """Whether `flush` should run now (memory holds enough to write)."""
        return self._held >= (CHUNK if self._file is not None else SPILL_LIMIT)

    def add(self, run: bytes) -> None:
        if not self._dropped:
            self._runs.append(run)
            self._held += len(run)

    def drop(self) -> None:
        """The message will be refused: keep nothing more of it."""
        self._dropped = True
        self._runs.clear()
        self._held = 0

    async def flush(self) -> None:
        """Write what memory holds to the spool file (opened on the first call)."""
        if self._dropped or not self._runs:
            return
        data = b"".join(self._runs)
        self._runs.clear()
        self._held = 0
        try:
            if self._file is None:
                self._head = data[:HEAD_LIMIT]
                self._file = await asyncio.to_thread(self._open)
            await asyncio.to_thread(self._file.write, data)
        except OSError as exc:  # disk full, I/O error: the message is refused, not the session
            log.warning("cannot spool a message in %s: %s", self._directory, exc)
            self.failed = True
            self.drop()
            return
        self._written += len(data)

    def _open(self) -> BinaryIO:
        if self._directory is not None:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return tempfile.TemporaryFile(dir=self._directory, prefix="data-", buffering=0)

    async def content(self) -> Content:
        """The whole message, once DATA has ended: in memory, or behind the spool file."""
        if self._file is None:
            return Content.of(b"".join(self._runs))
        await self.flush()
        return Content.behind(FileSource(self._file.fileno()), self._written, self._head)

    def close(self) -> None:
        """Release the spool file (it disappears with its last descriptor)."""
        file, self._file = self._file, None
        if file is not None:
            file.close()
        self._runs.clear()
