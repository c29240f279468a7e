"""The delivery journal: a next hop's acceptance noted the moment it arrives.

One job: close the window between a next hop's 250 and the queue's commit of it, in which a
crash would send the message again. `note` appends one line per accepted recipient with a
single write(2) and no fsync, so it costs microseconds and survives the process being killed
(kill -9, a crash: the kernel has the data); not a power loss, like the queue file updates of
Postfix, after which the message may be sent once more. The database commit that follows
within milliseconds stays the record; the journal only covers the time until then.

Files: `<dir>/<n>.log`, one JSON object a line: queue id, recipient row id, and the reply
(code, enhanced status, text, host), enough to record the delivery and the notice it calls for.
`done` is told when the records of a note are committed; a file that is no longer written and
has nothing outstanding is removed, and the file written is changed after 1 MiB. At start,
before the queue runs, `pending()` gives what a previous run noted (the queue manager records
each result whose recipient is still queued), then `clear()` removes the files. A line cut by
a crash in the middle of a write is skipped: its recipient is sent again, as without a journal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from sitemail.queue.model import Outcome, RecipientResult

__all__ = ["DeliveryJournal"]

log = logging.getLogger("sitemail.queue")

_ROTATE_BYTES = 1024 * 1024


class DeliveryJournal:
    """Append-only notes of accepted deliveries, for the queue manager of one server."""

    def __init__(self, directory: Path, *, rotate_bytes: int = _ROTATE_BYTES) -> None:
        self._dir = directory
        self._rotate = rotate_bytes
        self._fd: int | None = None
        self._current = 0  # the generation written to
        self._written = 0  # bytes in it
        self._outstanding: dict[int, int] = defaultdict(int)  # generation -> notes not done

    def note(self, queue_id: str, results: Sequence[RecipientResult]) -> int:
        """Append the delivered `results` of message `queue_id`; a token for `done`. A write on
        the event loop on purpose: a thread hop would widen the window this closes."""
        lines = b"".join(
            json.dumps(
                {
                    "q": queue_id,
                    "r": r.rcpt_id,
                    "c": r.code,
                    "s": r.status,
                    "t": r.text,
                    "m": r.remote_mta,
                },
                ensure_ascii=True,
            ).encode("ascii")
            + b"\n"
            for r in results
            if r.outcome is Outcome.DELIVERED
        )
        if not lines:
            return -1
        try:
            if self._fd is None or self._written >= self._rotate:
                self._open_next()
            assert self._fd is not None
            os.write(self._fd, lines)
        except OSError as exc:  # a full disk must not stop the record that follows
            log.warning("delivery journal not written (%s): the database record follows", exc)
            return -1
        self._written += len(lines)
        self._outstanding[self._current] += 1
        return self._current

    def done(self, token: int) -> None:
        """The records of the note `token` are committed."""
        if token < 0:
            return
        self._outstanding[token] -= 1
        if token != self._current and self._outstanding[token] <= 0:
            del self._outstanding[token]
            with contextlib.suppress(FileNotFoundError):
                self._path(token).unlink()

    def pending(self) -> dict[str, list[RecipientResult]]:
        """By queue id, every delivery noted by a previous run (call before the first note)."""
        noted: dict[str, list[RecipientResult]] = defaultdict(list)
        for path in self._files():
            for line in path.read_bytes().splitlines():
                try:
                    item = json.loads(line)
                    result = RecipientResult(
                        int(item["r"]),
                        Outcome.DELIVERED,
                        int(item["c"]),
                        str(item["s"]),
                        str(item["t"]),
                        str(item["m"]),
                    )
                    noted[str(item["q"])].append(result)
                except (ValueError, KeyError, TypeError):
                    log.warning("delivery journal %s: skipped a line cut by a crash", path.name)
        return dict(noted)

    def clear(self) -> None:
        """Remove what a previous run noted (once it is recorded in the database)."""
        for path in self._files():
            path.unlink()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _files(self) -> list[Path]:
        if not self._dir.is_dir():
            return []
        return sorted(self._dir.glob("*.log"), key=lambda p: int(p.stem))

    def _path(self, generation: int) -> Path:
        return self._dir / f"{generation}.log"

    def _open_next(self) -> None:
        """Write a new file from now on; the old one goes once its notes are done."""
        previous = self._current if self._fd is not None else None
        self.close()
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        existing = [int(p.stem) for p in self._files()]
        self._current = max([*existing, self._current]) + 1
        self._fd = os.open(self._path(self._current), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._written = 0
        if previous is not None and self._outstanding.get(previous, 0) <= 0:
            self._outstanding.pop(previous, None)
            with contextlib.suppress(FileNotFoundError):
                self._path(previous).unlink()
