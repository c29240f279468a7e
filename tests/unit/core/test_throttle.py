"""FailureThrottle: slots before the check, failures per key in a window, tags, bounded memory."""

from __future__ import annotations

from sitemail.core.clock import ManualClock
from sitemail.core.throttle import FailureThrottle


def make(limit: int = 3, max_keys: int = 100) -> tuple[FailureThrottle, ManualClock]:
    clock = ManualClock()
    return FailureThrottle(clock, limit=limit, window=60, lockout=300, max_keys=max_keys), clock


def test_throttle_attempts_in_progress_count_against_the_limit() -> None:
    """With a limit of 3, a fourth attempt is refused while three are still being checked."""
    throttle, _ = make()
    assert [throttle.admit("ip") for _ in range(4)] == [True, True, True, False]
    throttle.release("ip")
    assert throttle.admit("ip")


def test_throttle_locks_at_the_limit_until_the_lockout_ends() -> None:
    """`limit` failures lock the key for `lockout` seconds; other keys are untouched."""
    throttle, clock = make()
    for _ in range(3):
        assert throttle.admit("ip")
        throttle.release("ip")
        throttle.fail("ip", "alice")
    assert throttle.locked("ip")
    assert not throttle.admit("ip")
    assert throttle.admit("other")
    clock.advance(301)
    assert not throttle.locked("ip")
    assert throttle.admit("ip")


def test_throttle_forgets_failures_outside_the_window() -> None:
    throttle, clock = make()
    throttle.fail("ip")
    throttle.fail("ip")
    clock.advance(61)
    throttle.fail("ip")
    assert not throttle.locked("ip")


def test_throttle_forgive_clears_only_its_own_tag() -> None:
    """A success as bob forgives bob's failures, never alice's."""
    throttle, _ = make(limit=4)
    throttle.fail("ip", "alice")
    throttle.fail("ip", "alice")
    throttle.fail("ip", "bob")
    throttle.forgive("ip", "bob")
    throttle.fail("ip", "alice")
    assert not throttle.locked("ip")
    throttle.forgive("ip", "bob")
    throttle.fail("ip", "alice")
    assert throttle.locked("ip")


def test_throttle_memory_is_bounded() -> None:
    """Past max_keys the least recently touched key without an attempt in progress goes."""
    throttle, _ = make(max_keys=10)
    assert throttle.admit("busy")
    for n in range(50):
        throttle.fail(f"key{n}")
    assert len(throttle._entries) == 10
    assert "busy" in throttle._entries
