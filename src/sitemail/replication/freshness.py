"""How current this site's copy of the other sites' directories is, for routing.

One job: read replication's bookkeeping (`state.freshness`) into the `Freshness` value the
router asks for before it refuses or bounces a recipient of the shared domain that no site
is known to have (docs/routing.md, "Unknown recipients while replication lags").
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

from sitemail.replication import state
from sitemail.routing.router import Freshness
from sitemail.store.engine import Store

__all__ = ["freshness_reader"]


def freshness_reader(store: Store) -> Callable[[], Freshness]:
    """A callable the router keeps: each call reads the bookkeeping (two small queries)."""

    def read() -> Freshness:
        with store.read() as conn:
            caught_up, behind = state.freshness(conn)
        return Freshness(MappingProxyType(caught_up), frozenset(behind))

    return read
