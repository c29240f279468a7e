"""What each delivery attempt in flight is doing right now, kept in memory by the queue manager.

One job: answer "what is happening to this message?" while an attempt is under way, which
the database cannot (it learns of an attempt only when its result is recorded: until then
`queue list` showed `tries 0` and no reason, however long the next hop stalled).

The manager opens an attempt (`Attempts.track`) around each hand-over to a transport (one
message, the recipients of one next hop) and around results it keeps in memory because they
could not be written. Inside it, the transport says what it is doing with `report_stage`
("connecting to mx.example[192.0.2.1]:25", "waiting for the reply to DATA from ...");
the attempt is found through a context variable, so transports need no extra parameter and a
call outside an attempt does nothing. `snapshot()` lists the attempts as values (JSON-ready);
the running server hands it to its admin API and answers the CLI with it over the local
control channel (admin/wake.py), since `sitemail queue list` runs in another process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sitemail.core.clock import Clock

__all__ = ["Attempt", "Attempts", "report_stage"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt in flight: a message, the recipients it carries, what it does since when."""

    queue_id: str
    recipients: tuple[str, ...]
    nexthop: str  # "relay 192.0.2.7:25", "site SiteB"
    started: float  # epoch seconds
    stage: str  # "connecting to ...", "waiting for the reply to DATA from ..."
    since: float  # when the stage began

    def to_json(self) -> dict[str, Any]:
        return {
            "queue_id": self.queue_id,
            "recipients": list(self.recipients),
            "nexthop": self.nexthop,
            "started": self.started,
            "stage": self.stage,
            "since": self.since,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Attempt:
        """The inverse of `to_json`; KeyError/TypeError/ValueError on a malformed entry."""
        return cls(
            queue_id=str(data["queue_id"]),
            recipients=tuple(str(r) for r in data["recipients"]),
            nexthop=str(data["nexthop"]),
            started=float(data["started"]),
            stage=str(data["stage"]),
            since=float(data["since"]),
        )


@dataclass(slots=True)
class _Live:
    """An attempt as it runs (cheap to update: a transport reports every command)."""

    queue_id: str
    recipients: tuple[str, ...]
    nexthop: str
    started: float
    stage: str
    since: float
    clock: Clock = field(repr=False)

    def report(self, text: str) -> None:
        self.stage, self.since = text, self.clock.now()

    def value(self) -> Attempt:
        return Attempt(
            self.queue_id, self.recipients, self.nexthop, self.started, self.stage, self.since
        )


_CURRENT: ContextVar[_Live | None] = ContextVar("sitemail_attempt", default=None)


def report_stage(text: str) -> None:
    """For transports: the attempt this task belongs to is now doing `text` (no-op outside)."""
    live = _CURRENT.get()
    if live is not None:
        live.report(text)


class Attempts:
    """The attempts in flight of one server (one event loop)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._live: dict[int, _Live] = {}

    @contextlib.contextmanager
    def track(
        self, queue_id: str, recipients: Sequence[str], nexthop: str, stage: str = "starting"
    ) -> Iterator[None]:
        """An attempt for the duration of the block; `report_stage` inside it updates it."""
        now = self.clock.now()
        live = _Live(queue_id, tuple(recipients), nexthop, now, stage, now, self.clock)
        self._live[id(live)] = live
        token = _CURRENT.set(live)
        try:
            yield
        finally:
            _CURRENT.reset(token)
            self._live.pop(id(live), None)

    def snapshot(self) -> list[Attempt]:
        """Every attempt in flight, oldest first (safe to call from another thread)."""
        return sorted((live.value() for live in list(self._live.values())), key=_started)


def _started(attempt: Attempt) -> float:
    return attempt.started
