"""Free space where the server writes: asked of the file system at most once a second.

One job: answer "is there room for a message of this size?" for the SMTP listeners' MAIL
command, as Postfix does with `queue_minfree`. `FreeSpace(path, reserve)`: the room is the
space the file system holding `path` (the data dir) gives an unprivileged writer, less the
`reserve`; MAIL is refused (452 4.3.1) when the free space is below the reserve, and a declared
SIZE when it does not fit in the room. The reserve keeps space for what the server must still
write after accepting: records of deliveries, DSNs, the database's journal.

Cheap: while the free space is at least twice the reserve, `os.statvfs` runs at most once
per `interval` (a few microseconds on a local file system, but a slow network file system
would not be); closer to the reserve, at every MAIL, since a busy server fills megabytes a
second and a stale answer would let it write into the reserve. A crossing of the reserve is
logged once each way, never per command. A file system that
cannot be asked (statvfs fails) counts as having room: the writes themselves still fail safely
(the client hears 451 and keeps its message).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["FreeSpace"]

log = logging.getLogger("sitemail.store")


class FreeSpace:
    """The room left above a reserve on the file system holding `path`, cached."""

    def __init__(
        self,
        path: Path,
        reserve: int,
        *,
        interval: float = 1.0,
        now: Callable[[], float] = time.monotonic,
        statvfs: Callable[[Path], os.statvfs_result] = os.statvfs,
    ) -> None:
        self.path = path
        self.reserve = reserve
        self._interval = interval
        self._now = now
        self._statvfs = statvfs
        self._free: int | None = None
        self._asked_at: float | None = None
        self._low = False

    def free(self) -> int | None:
        """Bytes an unprivileged writer may still use there (None: the system did not say)."""
        now = self._now()
        plenty = self._free is not None and self._free >= 2 * self.reserve
        if not plenty or self._asked_at is None or now - self._asked_at >= self._interval:
            self._asked_at = now
            try:
                stats = self._statvfs(self.path)
            except OSError as exc:
                log.warning("cannot read the free space of %s: %s", self.path, exc)
                self._free = None
            else:
                self._free = stats.f_bavail * stats.f_frsize
                self._note(self._free)
        return self._free

    def has_room(self, size: int | None = None) -> bool:
        """Whether a message may be accepted: free space at least the reserve, and a declared
        `size` within the free space beyond it."""
        free = self.free()
        if free is None:
            return True
        return free >= self.reserve and (size is None or size <= free - self.reserve)

    def _note(self, free: int) -> None:
        """Log a crossing of the reserve, once each way."""
        low = free < self.reserve
        if low and not self._low:
            log.warning(
                "free space on %s is %d bytes, below the reserve of %d ([queue] min_free): "
                "new mail is refused with 452 4.3.1 until there is room",
                self.path,
                free,
                self.reserve,
            )
        elif self._low and not low:
            log.warning("free space on %s is back above the reserve: %d bytes", self.path, free)
        self._low = low
