"""Time as an injected dependency, so tests can cover hours of retries in seconds.

`SystemClock` reads the real time; `ManualClock` is advanced by the test. Both give aware UTC
datetimes and float epoch seconds; nothing else in sitemail calls `time.time()` directly.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "span"]


class Clock(Protocol):
    """The time source every component takes in its constructor."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def utcnow(self) -> datetime:
        """The current time as an aware UTC datetime."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()

    def utcnow(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self._now, UTC)

    def advance(self, seconds: float) -> None:
        self._now += seconds


def span(seconds: float) -> str:
    """A duration for people: "42 s", "17 min", "3.5 h"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
