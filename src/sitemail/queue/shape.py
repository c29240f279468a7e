"""The queue by destination: recipients counted by next hop and age bucket (Postfix's qshape).

One job: turn the queued recipients (their next hop and their message's age) into a table an
admin reads at a glance: which destination holds mail, and since how long. A recipient's next
hop is the one an attempt in flight is talking to, else the one it was last deferred at
(`queue_rcpt.nexthop`), else "(not tried yet)"; held messages count as "(held)", whatever
their hop, since nothing leaves them until the admin says so.

Ages are in minutes, the buckets doubling like qshape's: a recipient counts in the first
bucket its message's age fits under (`0-5`, `5-10`, ... `640-1280`, then `1280+`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from sitemail.queue.model import RcptState
from sitemail.store.tables import queue_message, queue_rcpt

__all__ = ["BUCKETS", "HopRow", "QueueShape", "bucket_labels", "read_shape"]

BUCKETS: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320, 640, 1280)  # upper bounds, minutes
NOT_TRIED = "(not tried yet)"
NO_ROUTE = "(no route yet)"
HELD = "(held)"


def bucket_labels(buckets: Sequence[int] = BUCKETS) -> list[str]:
    """`0-5`, `5-10`, ..., `1280+`: one per bucket and the open one past the last."""
    bounds = [0, *buckets]
    return [f"{a}-{b}" for a, b in itertools.pairwise(bounds)] + [f"{buckets[-1]}+"]


@dataclass(frozen=True, slots=True)
class HopRow:
    nexthop: str
    total: int
    counts: tuple[int, ...]  # one per bucket label
    oldest: float  # age in seconds of the oldest message for this hop

    def to_json(self, labels: Sequence[str]) -> dict[str, Any]:
        return {
            "nexthop": self.nexthop,
            "total": self.total,
            "oldest_seconds": round(self.oldest, 1),
            "buckets": dict(zip(labels, self.counts, strict=True)),
        }


@dataclass(frozen=True, slots=True)
class QueueShape:
    labels: tuple[str, ...]
    total: HopRow  # every hop added up, named "TOTAL"
    hops: tuple[HopRow, ...]  # most recipients first
    messages: int = 0  # messages with a queued recipient

    def to_json(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "buckets": list(self.labels),
            "total": self.total.to_json(self.labels),
            "nexthops": [row.to_json(self.labels) for row in self.hops],
        }


def _bucket(age: float, buckets: Sequence[int]) -> int:
    minutes = age / 60
    for index, bound in enumerate(buckets):
        if minutes < bound:
            return index
    return len(buckets)


def _row(name: str, ages: Sequence[float], buckets: Sequence[int]) -> HopRow:
    counts = [0] * (len(buckets) + 1)
    for age in ages:
        counts[_bucket(age, buckets)] += 1
    return HopRow(name, len(ages), tuple(counts), max(ages, default=0.0))


def read_shape(
    conn: Connection,
    now: float,
    live: Mapping[tuple[str, str], str] | None = None,
    buckets: Sequence[int] = BUCKETS,
) -> QueueShape:
    """The shape of the queue at `now`; `live` maps (queue id, recipient) to the next hop
    an attempt in flight is at (queue.attempts)."""
    c = queue_rcpt.c
    m = queue_message.c
    rows = conn.execute(
        select(c.queue_id, c.address, c.nexthop, c.attempts, c.last_status, m.received_at, m.held)
        .join(queue_message, m.queue_id == c.queue_id)
        .where(c.state == RcptState.QUEUED.value)
    ).all()
    ages: dict[str, list[float]] = {}
    for row in rows:
        hop = (live or {}).get((row.queue_id, row.address)) or row.nexthop or ""
        if row.held:
            hop = HELD
        elif not hop:
            hop = NO_ROUTE if row.attempts else NOT_TRIED
        ages.setdefault(hop, []).append(max(0.0, now - row.received_at))
    hops = sorted(
        (_row(name, values, buckets) for name, values in ages.items()),
        key=lambda r: (-r.total, r.nexthop),
    )
    every = [age for values in ages.values() for age in values]
    return QueueShape(
        tuple(bucket_labels(buckets)),
        _row("TOTAL", every, buckets),
        tuple(hops),
        len({row.queue_id for row in rows}),
    )
