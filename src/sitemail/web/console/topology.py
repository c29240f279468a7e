"""The organisation as a picture: sites, connected-site links and replication connectors, each
link coloured by its health as this site sees it.

One job: turn what the directory and the local replication and queue state say into nodes and
links with positions and a health (pure logic, no I/O; the template draws the SVG).

Health is only judged for what this site can see for itself: its own connectors (replication
lag, an unanswered request) and its own connected-site links (mail waiting in its queue for
that hop, the last error). Links that other sites own are drawn from the replicated directory
and shown grey: their health is on the owning site's console.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "Health",
    "HopLoad",
    "Link",
    "LinkKind",
    "Node",
    "ReplicationView",
    "Topology",
    "build_topology",
    "connected_health",
    "replication_health",
]

WIDTH, HEIGHT = 560, 360
RADIUS = 140
WAITING_WARN = 600.0  # an unanswered request older than this is worth a look
LAG_ERROR = 24 * 3600.0  # a day without a complete exchange: something is broken
QUEUE_ERROR_AGE = 3600.0  # mail waiting an hour for a hop


class Health(StrEnum):
    OK = "ok"
    WARN = "warn"
    ERROR = "error"
    UNKNOWN = "unknown"  # owned by another site: judged there


_RANK = {Health.UNKNOWN: 0, Health.OK: 1, Health.WARN: 2, Health.ERROR: 3}


class LinkKind(StrEnum):
    CONNECTED_SITE = "connected-site"  # mail for the site goes there (IMS Connected Sites)
    REPLICATION = "replication"  # a Directory Replication Connector pulls from the site


@dataclass(frozen=True, slots=True)
class ReplicationView:
    """What this site knows of one of its own connectors' exchanges."""

    waiting_since: float | None  # an unanswered request's time
    lag: float | None  # seconds since the last complete exchange; None: never
    interval: float | None  # the schedule's seconds; None: "never"


@dataclass(slots=True)
class HopLoad:
    """Mail in this site's queue whose first hop is one site."""

    queued: int = 0
    deferred: int = 0  # tried and told to wait
    failing: int = 0  # refused for good at the last attempt
    unreachable: bool = False  # the last attempt found nobody answering (4.4.1: down)
    oldest: float | None = None
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    display_name: str
    x: float
    y: float
    local: bool
    health: Health


@dataclass(frozen=True, slots=True)
class Link:
    kind: LinkKind
    owner: str  # the site whose directory object this is
    source: str  # where mail (or a replication request) starts
    target: str
    health: Health
    summary: str  # one line: what the colour means
    x1: float = 0.0
    y1: float = 0.0
    x2: float = 0.0
    y2: float = 0.0


@dataclass(slots=True)
class Topology:
    local: str
    nodes: list[Node] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def replication_health(view: ReplicationView | None, now: float) -> tuple[Health, str]:
    """The colour of one of our connectors, and why."""
    if view is None:
        return Health.WARN, "no exchange yet"
    if view.waiting_since is not None and now - view.waiting_since > WAITING_WARN:
        return Health.WARN, f"request unanswered for {_ago(now - view.waiting_since)}"
    if view.lag is None:
        return Health.WARN, "never replicated completely"
    if view.lag > LAG_ERROR:
        return Health.ERROR, f"last complete exchange {_ago(view.lag)} ago"
    if view.interval is not None and view.lag > 2 * view.interval + WAITING_WARN:
        return Health.WARN, f"behind its schedule: last complete exchange {_ago(view.lag)} ago"
    return Health.OK, f"replicated {_ago(view.lag)} ago"


def connected_health(load: HopLoad | None, now: float) -> tuple[Health, str]:
    """The colour of one of our connected-site links, from the mail waiting for it."""
    if load is None or load.queued == 0:
        return Health.OK, "no mail waiting"
    waited = now - load.oldest if load.oldest is not None else 0.0
    why = f"{load.queued} waiting, oldest {_ago(waited)}"
    if load.last_error:
        why += f"; last error: {load.last_error}"
    if load.unreachable:  # a site that does not answer is down, not late: red
        return Health.ERROR, f"{why} (the site does not answer: down?)"
    if load.failing or waited > QUEUE_ERROR_AGE:
        return Health.ERROR, why
    if load.deferred:
        return Health.WARN, why
    return Health.OK, why


def _positions(names: list[str], local: str) -> dict[str, tuple[float, float]]:
    """The local site on top, the others clockwise around a circle, in name order."""
    cx, cy = WIDTH / 2, HEIGHT / 2
    if len(names) == 1:
        return {names[0]: (cx, cy)}
    ordered = [local] + [n for n in names if n != local] if local in names else names
    step = 2 * math.pi / len(ordered)
    return {
        name: (
            round(cx + RADIUS * math.sin(i * step), 1),
            round(cy - RADIUS * math.cos(i * step), 1),
        )
        for i, name in enumerate(ordered)
    }


def _offset(link: Link, where: Mapping[str, tuple[float, float]]) -> Link:
    """Place a link between its sites, shifted sideways so that both directions and both
    kinds between two sites stay apart (each direction keeps to its own right)."""
    (x1, y1), (x2, y2) = where[link.source], where[link.target]
    length = math.hypot(x2 - x1, y2 - y1) or 1.0
    ux, uy = (x2 - x1) / length, (y2 - y1) / length
    side = 6.0 if link.kind is LinkKind.CONNECTED_SITE else 15.0
    nx, ny = -uy * side, ux * side
    trim = 34.0  # stop at the node's circle, not its centre
    return Link(
        link.kind,
        link.owner,
        link.source,
        link.target,
        link.health,
        link.summary,
        round(x1 + ux * trim + nx, 1),
        round(y1 + uy * trim + ny, 1),
        round(x2 - ux * trim + nx, 1),
        round(y2 - uy * trim + ny, 1),
    )


def build_topology(
    local: str,
    *,
    sites: Iterable[tuple[str, str]],
    connected: Iterable[tuple[str, str]],
    connectors: Iterable[tuple[str, str]],
    replication: Mapping[str, ReplicationView],
    loads: Mapping[str, HopLoad],
    now: float,
) -> Topology:
    """The picture of the organisation as `local` knows it.

    `sites` are (name, display name); `connected` are (owner, site) connected-site entries and
    `connectors` (owner, site) replication connectors of every site the directory holds;
    `replication` and `loads` are keyed by the remote site of this site's own links.
    """
    names = dict(sites)
    for owner, target in [*connected, *connectors]:
        names.setdefault(owner, owner)  # a link to a site not replicated yet still shows
        names.setdefault(target, target)
    links: list[Link] = []
    for owner, target in sorted(set(connected)):
        health, why = (
            connected_health(loads.get(target), now)
            if owner == local
            else (Health.UNKNOWN, f"as replicated from {owner}")
        )
        links.append(Link(LinkKind.CONNECTED_SITE, owner, owner, target, health, why))
    for owner, target in sorted(set(connectors)):
        health, why = (
            replication_health(replication.get(target), now)
            if owner == local
            else (Health.UNKNOWN, f"as replicated from {owner}")
        )
        # A connector at `owner` pulls from `target`: the directory flows target -> owner.
        links.append(Link(LinkKind.REPLICATION, owner, target, owner, health, why))
    where = _positions(sorted(names), local)
    topology = Topology(local, links=[_offset(link, where) for link in links])
    for name in sorted(names):
        health = Health.OK if name == local else _node_health(name, local, topology.links)
        x, y = where[name]
        topology.nodes.append(Node(name, names[name], x, y, name == local, health))
    return topology


def _node_health(name: str, local: str, links: list[Link]) -> Health:
    """A remote site is as healthy as the worst of our own links to it."""
    ours = [
        link.health for link in links if link.owner == local and name in (link.source, link.target)
    ]
    return max(ours, key=_RANK.__getitem__) if ours else Health.UNKNOWN
