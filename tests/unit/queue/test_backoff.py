"""The back-off after failed queue writes: doubling rounds, not doublings per failure, and a
log line per interval, not per message."""

from __future__ import annotations

import logging

import pytest

from sitemail.core.errors import StoreUnavailableError
from sitemail.queue.backoff import Backoff

FULL = StoreUnavailableError("database write failed: OperationalError: database or disk is full")


class Ticker:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _backoff(ticker: Ticker) -> Backoff:
    return Backoff(initial=1.0, maximum=8.0, log_interval=60.0, now=ticker)


def test_backoff_waits_nothing_until_a_failure() -> None:
    """A healthy store: no wait, not failing, and success logs nothing."""
    backoff = _backoff(Ticker())
    backoff.succeeded()
    assert backoff.wait() == 0.0
    assert not backoff.failing


def test_backoff_doubles_per_round_up_to_the_maximum() -> None:
    """Failures within a round share its wait; each new round doubles it, capped."""
    ticker = Ticker()
    backoff = _backoff(ticker)
    assert backoff.failed(FULL) == 1.0
    for _ in range(30):  # thirty results failing in the same commit: one round
        backoff.failed(FULL)
    assert backoff.delay == 1.0
    delays = []
    for _ in range(6):
        ticker.t += backoff.wait()
        backoff.failed(FULL)
        delays.append(backoff.delay)
    assert delays == [2.0, 4.0, 8.0, 8.0, 8.0, 8.0]


def test_backoff_ends_with_a_success_and_starts_again_from_initial() -> None:
    """After recovery the next failure waits `initial` again."""
    ticker = Ticker()
    backoff = _backoff(ticker)
    backoff.failed(FULL)
    ticker.t += 1.0
    backoff.failed(FULL)
    assert backoff.delay == 2.0
    backoff.succeeded()
    assert not backoff.failing
    assert backoff.wait() == 0.0
    assert backoff.failed(FULL) == 1.0


def test_backoff_logs_once_per_interval_not_per_failure(caplog: pytest.LogCaptureFixture) -> None:
    """961 failures in two minutes: three error lines (at once, after 60 s, after 120 s),
    each counting what it covers, and one line when writes work again."""
    ticker = Ticker()
    backoff = _backoff(ticker)
    with caplog.at_level(logging.INFO, logger="sitemail.queue"):
        for _ in range(961):
            backoff.failed(FULL, "recording delivery results")
            ticker.t += 0.125
        backoff.succeeded()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3
    assert errors[0].exc_info is not None  # the first one carries the traceback
    assert all(r.exc_info is None for r in errors[1:])
    assert "recording delivery results failed" in errors[0].getMessage()
    assert "database or disk is full" in errors[0].getMessage()
    assert "1 failure(s)" in errors[0].getMessage()
    assert "480 failure(s) in 60 s" in errors[1].getMessage()
    recovered = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(recovered) == 1
    assert "work again after 961 failure(s) over 2 min" in recovered[0].getMessage()
