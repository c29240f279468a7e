"""When the queue's store fails: how long to wait before trying again, and what to log.

One job: the queue manager's memory of a failing store (disk full, I/O error, database
locked) or of failing passes. Each failure calls `failed(exc)`; `wait()` says how long nothing
new should start. The wait doubles per *round* of failures, from `initial` to `maximum`: a
round is every failure seen before the wait it set is over, so the thirty results that fail
in one commit (or the thirty kept results retried together) count once, not as thirty
doublings. `succeeded()` after any write that worked ends it.

Logging is once per `log_interval`, never once per message: the first failure at once (with
its traceback), then one line per interval saying how many writes failed since; recovery is
logged once, with the count and how long it lasted. The 72 MB log of the disk-full run came
from one line per message per pass.

Time is monotonic (a delay, not a date) and injected (`now`), so tests step it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sitemail.core.clock import span

__all__ = ["Backoff"]

log = logging.getLogger("sitemail.queue")


class Backoff:
    """Doubling waits after failures, and a log line per interval at most."""

    def __init__(
        self,
        *,
        initial: float = 0.5,
        maximum: float = 30.0,
        log_interval: float = 60.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._initial = initial
        self._maximum = maximum
        self._log_interval = log_interval
        self._now = now
        self._since: float | None = None  # first failure of this episode
        self._delay = 0.0
        self._until = 0.0  # nothing new starts before this
        self._failures = 0  # in this episode
        self._unlogged = 0  # failures not yet in a log line
        self._logged_at: float | None = None

    @property
    def failing(self) -> bool:
        """Whether the last outcome was a failure (until a write works again)."""
        return self._since is not None

    @property
    def delay(self) -> float:
        """The wait of the current round (0 when not failing)."""
        return self._delay

    def wait(self) -> float:
        """Seconds before anything new should be tried (0: go ahead)."""
        return max(0.0, self._until - self._now()) if self._since is not None else 0.0

    def failed(self, exc: BaseException | None, what: str = "queue write") -> float:
        """One failure: start a round if the last one is over; log if the interval allows.
        Returns `wait()`."""
        now = self._now()
        if self._since is None:
            self._since, self._delay = now, self._initial
            self._until = now + self._delay
        elif now >= self._until:  # a new round: the wait it set did not help
            self._delay = min(self._maximum, self._delay * 2)
            self._until = now + self._delay
        self._failures += 1
        self._unlogged += 1
        if self._logged_at is None or now - self._logged_at >= self._log_interval:
            self._log(exc, what, now)
        return self.wait()

    def succeeded(self) -> None:
        """A write worked: the store is back; log it once."""
        if self._since is None:
            return
        log.warning(
            "queue writes work again after %d failure(s) over %s",
            self._failures,
            span(self._now() - self._since),
        )
        self._since = None
        self._delay = self._until = 0.0
        self._failures = self._unlogged = 0
        self._logged_at = None

    def _log(self, exc: BaseException | None, what: str, now: float) -> None:
        assert self._since is not None
        first = self._logged_at is None
        start = self._since if self._logged_at is None else self._logged_at
        log.error(
            "%s failed: %s; %d failure(s) in %s; nothing new starts for %g s, results "
            "already obtained are kept in memory until written (next report in %s)",
            what,
            f"{exc.__class__.__name__}: {exc}" if exc is not None else "unknown error",
            self._unlogged,
            span(now - start),
            self._delay,
            span(self._log_interval),
            exc_info=exc if first and exc is not None else None,
        )
        self._logged_at = now
        self._unlogged = 0
