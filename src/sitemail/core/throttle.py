"""Failure throttling: how many failed attempts a key (a client address, an account) may make.

One job: count failures per key in a sliding window, lock a key that reaches the limit, and
count attempts still in progress against the same limit. An attempt takes a slot (`admit`)
before its secret is checked and gives it back when the check is done (`release`), so a
burst of parallel attempts is held to the limit exactly as a sequence is: with a limit of 10,
at most 10 answers are ever computed per window, however many connections ask at once.

Each failure carries a tag (for a client address: the account it tried; for an account: the
address it came from). `forgive(key, tag)` forgets only the failures with that tag, so a
success clears its own earlier mistakes and nobody else's: a success as bob never resets the
failures counted against alice, from any address. Memory is bounded: the least recently
touched keys are forgotten past `max_keys` (an attacker spreading over many keys gets no more
than `limit` tries on each anyway).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from sitemail.core.clock import Clock

__all__ = ["FailureThrottle"]

_MAX_KEYS = 100_000


@dataclass(slots=True)
class _Entry:
    failures: collections.deque[tuple[float, str]] = field(default_factory=collections.deque)
    pending: int = 0
    locked_until: float = 0.0


class FailureThrottle:
    """`limit` failures within `window` seconds lock a key for `lockout` seconds."""

    def __init__(
        self, clock: Clock, *, limit: int, window: float, lockout: float, max_keys: int = _MAX_KEYS
    ) -> None:
        self._clock = clock
        self._limit = max(1, limit)
        self._window = window
        self._lockout = lockout
        self._max_keys = max_keys
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()

    def locked(self, key: str) -> bool:
        """Whether `key` is locked out now (its attempts are refused unchecked)."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        self._refresh(entry)
        return entry.locked_until > 0

    def admit(self, key: str) -> bool:
        """Take a slot for one attempt, or False when the key is locked or its failures and
        attempts in progress already reach the limit."""
        entry = self._entry(key)
        self._refresh(entry)
        if entry.locked_until or len(entry.failures) + entry.pending >= self._limit:
            return False
        entry.pending += 1
        return True

    def release(self, key: str) -> None:
        """Give back the slot of an attempt whose check is done (call once per `admit`)."""
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.pending = max(0, entry.pending - 1)
        self._refresh(entry)
        if not entry.failures and not entry.pending and not entry.locked_until:
            del self._entries[key]  # nothing left to remember

    def fail(self, key: str, tag: str = "") -> None:
        """Count one failure; the key is locked when it reaches the limit."""
        entry = self._entry(key)
        self._refresh(entry)
        now = self._clock.now()
        entry.failures.append((now, tag))
        if len(entry.failures) >= self._limit:
            entry.locked_until = now + self._lockout

    def forgive(self, key: str, tag: str) -> None:
        """Forget the key's failures with this tag (not a lock already in force)."""
        entry = self._entries.get(key)
        if entry is not None and not entry.locked_until:
            kept = [item for item in entry.failures if item[1] != tag]
            entry.failures = collections.deque(kept)

    def _entry(self, key: str) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            while len(self._entries) > self._max_keys:
                self._evict()
        else:
            self._entries.move_to_end(key)
        return entry

    def _evict(self) -> None:
        """Forget the least recently touched key that has no attempt in progress."""
        for key, entry in self._entries.items():
            if not entry.pending:
                del self._entries[key]
                return
        self._entries.popitem(last=False)

    def _refresh(self, entry: _Entry) -> None:
        """Drop failures older than the window, and a lock that has expired."""
        now = self._clock.now()
        if entry.locked_until and now >= entry.locked_until:
            entry.locked_until = 0.0
            entry.failures.clear()
        while entry.failures and entry.failures[0][0] <= now - self._window:
            entry.failures.popleft()
