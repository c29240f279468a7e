"""What the console's pages show, gathered from AdminService (no HTML here).

One job: read the organisation, this site's replication and queue state into the plain values
the templates draw: the tree, the topology with its health, the link summaries. Every page of
the console reads through here or AdminService directly; nothing here changes anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sitemail.admin.replication import PeerStatus
from sitemail.admin.service import AdminService
from sitemail.queue.admin import QueueEntry
from sitemail.replication.connectors import all_connectors, parse_schedule
from sitemail.replication.kcc import SiteInfo, known_sites
from sitemail.routing.route import Transport
from sitemail.web.console.topology import HopLoad, ReplicationView, Topology, build_topology

__all__ = ["Tree", "hop_loads", "replication_views", "topology", "tree"]

MAX_ROUTED = 2000  # queued recipients routed for the picture; beyond that the queue page tells
NO_ANSWER = "4.4.1"  # RFC 3463 "no answer from host": the last attempt found the site down


@dataclass(frozen=True, slots=True)
class Tree:
    """The left pane: the organisation, its sites and this site's configuration containers."""

    organization: str
    local_site: str
    local_server: str
    sites: list[SiteInfo]


def tree(service: AdminService) -> Tree:
    org = service.org()
    sites = sorted(known_sites(service.directory), key=lambda s: (not s.is_local, s.name))
    return Tree(org.name, org.local_site, org.local_server, sites)


def replication_views(
    peers: list[PeerStatus], schedules: Mapping[str, str]
) -> dict[str, ReplicationView]:
    """Our connectors' exchanges, keyed by peer, as the topology judges them."""
    return {
        p.peer: ReplicationView(
            p.outstanding_at if p.waiting else None,
            p.lag,
            parse_schedule(schedules[p.peer]) if p.peer in schedules else None,
        )
        for p in peers
        if p.connector
    }


def hop_loads(service: AdminService, entries: list[QueueEntry]) -> dict[str, HopLoad]:
    """Mail waiting in our queue, by the site it goes to first."""
    router = service.routing.router()
    paths = router.table().sites
    loads: dict[str, HopLoad] = {}
    routed = 0
    for entry in entries:
        for rcpt in entry.recipients:
            if rcpt.state != "queued" or routed >= MAX_ROUTED:
                continue
            routed += 1
            route = router.route(rcpt.address)
            path = paths.get(route.site) if route.transport is Transport.SITE else None
            if path is None:
                continue
            load = loads.setdefault(path.first_hop, HopLoad())
            load.queued += 1
            if rcpt.attempts:
                failed = rcpt.last_status.startswith("5")
                load.failing += failed
                load.deferred += not failed
                load.last_error = rcpt.last_text or load.last_error
                load.unreachable |= rcpt.last_status == NO_ANSWER
            load.oldest = min(entry.received_at, load.oldest or entry.received_at)
    return loads


def topology(service: AdminService, now: float) -> Topology:
    """The organisation's picture as this site knows it."""
    local = service.directory.local_site
    connectors = all_connectors(service.directory)
    status = service.replication.status()
    schedules = {c.site: c.schedule for c in connectors if c.owner == local}
    return build_topology(
        local,
        sites=[(s.name, s.display_name) for s in known_sites(service.directory)],
        connected=[
            (c.owner, c.site) for c in service.routing.list_connected_sites(every_site=True)
        ],
        connectors=[(c.owner, c.site) for c in connectors],
        replication=replication_views(status.peers, schedules),
        loads=hop_loads(service, service.queue.entries()),
        now=now,
    )
