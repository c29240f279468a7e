"""The routing table (Exchange's GWART): how this site reaches every other site and domain.

One job: compute, as a pure function of the directory's configuration objects, the table the
router consults for every recipient, and load it from the directory.

- Sites: the cheapest path from this site to every other site over the Connected Sites entries
  of *all* sites (ours, and those that replicated here), so a site reached only through an
  intermediate site needs no entry of its own (seed item 11). Ties: fewer hops, then the
  alphabetically first path, so every run and every reader gets the same answer. Mail goes to
  the path's first hop, addressed by our own entry's routing address; the next site routes on.
- Site domains: a remote site's routing address (from any Connected Sites entry naming it, or
  the routing domain its site object publishes) routes to that site. A domain two sites claim
  is ambiguous and routes by neither (the KCC reports it).
- Sibling hosts: the listen addresses other sites' servers publish (mail between sites is
  never refused at RCPT for an unknown user: the receiving site's queue decides).
- Domain routes (this site's E-Mail Domain table), accepted domains (authoritative or internal
  relay; this site's own entries decide, another site's internal-relay domain sends unresolved
  recipients to that site), the smart host, and the MX default.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sitemail.directory import Directory, ObjectKind, list_domain_routes
from sitemail.directory.ims_objects import (
    ConnectedSite,
    DomainEntry,
    list_connected_sites,
    list_domains,
)
from sitemail.routing.domain_routes import DomainRoute, match_domain_route, parse_nexthop

__all__ = ["RoutingTable", "SitePath", "build_table", "load_table"]


@dataclass(frozen=True, slots=True)
class SitePath:
    """The cheapest way from this site to `site`."""

    site: str
    path: tuple[str, ...]  # this site first, `site` last
    cost: int
    routing_address: str  # where mail for the first hop is sent (our entry's routing address)
    tls_fingerprint: str  # our entry's pin for the first hop, "" when not pinned

    @property
    def first_hop(self) -> str:
        return self.path[1]


@dataclass(frozen=True, slots=True)
class RoutingTable:
    local_site: str
    sites: dict[str, SitePath] = field(default_factory=dict)
    unreachable: tuple[str, ...] = ()  # known sites with no path from here
    site_domains: dict[str, str] = field(default_factory=dict)  # routing domain -> site
    ambiguous_domains: tuple[str, ...] = ()  # routing domains two sites claim
    domain_routes: tuple[DomainRoute, ...] = ()
    accepted: frozenset[str] = frozenset()  # every domain the organisation accepts
    internal_relay: dict[str, str] = field(default_factory=dict)  # our domain -> forward host
    relayed_by: dict[str, str] = field(default_factory=dict)  # other site's relay domain -> site
    smart_host: str = ""
    dsa_domain: str = ""  # our directory-service mailbox's domain
    sibling_hosts: frozenset[str] = frozenset()  # listen addresses of other sites' servers

    def domain_route(self, domain: str) -> DomainRoute | None:
        return match_domain_route(self.domain_routes, domain)


def _cheapest_paths(
    local_site: str, entries: Iterable[ConnectedSite]
) -> dict[str, tuple[int, tuple[str, ...]]]:
    """Dijkstra over the Connected Sites graph (owner -> named site, weighted by cost)."""
    edges: dict[str, list[tuple[int, str]]] = {}
    for entry in entries:
        if entry.site != entry.owner:
            edges.setdefault(entry.owner, []).append((entry.cost, entry.site))
    best: dict[str, tuple[int, int, tuple[str, ...]]] = {}
    heap: list[tuple[int, int, tuple[str, ...]]] = [(0, 0, (local_site,))]
    while heap:
        cost, hops, path = heapq.heappop(heap)
        site = path[-1]
        if site in best:
            continue
        best[site] = (cost, hops, path)
        for step, nxt in sorted(edges.get(site, ())):
            if nxt not in best and nxt != local_site:
                heapq.heappush(heap, (cost + step, hops + 1, (*path, nxt)))
    return {site: (cost, path) for site, (cost, _, path) in best.items() if site != local_site}


def _site_domains(
    entries: Iterable[ConnectedSite], published: dict[str, str], local_site: str
) -> tuple[dict[str, str], tuple[str, ...]]:
    claims: dict[str, set[str]] = {}
    for entry in entries:
        if entry.routing_address:
            claims.setdefault(entry.routing_address, set()).add(entry.site)
    for site, domain in published.items():
        if domain:
            claims.setdefault(domain, set()).add(site)
    single = {d: next(iter(s)) for d, s in claims.items() if len(s) == 1}
    ambiguous = tuple(sorted(d for d, s in claims.items() if len(s) > 1))
    return {d: s for d, s in single.items() if s != local_site}, ambiguous


def build_table(
    local_site: str,
    *,
    known_sites: Iterable[str] = (),
    published_domains: dict[str, str] | None = None,
    connected: Sequence[ConnectedSite] = (),
    domain_routes: Sequence[DomainRoute] = (),
    accepted: Iterable[str] = (),
    domains: Sequence[DomainEntry] = (),
    smart_host: str = "",
    dsa_domain: str = "",
    sibling_hosts: Iterable[str] = (),
) -> RoutingTable:
    """The table for `local_site` (pure: the golden tests feed it directly)."""
    paths = _cheapest_paths(local_site, connected)
    own = {e.site: e for e in connected if e.owner == local_site}
    sites = {
        site: SitePath(site, path, cost, own[path[1]].routing_address, own[path[1]].tls_fingerprint)
        for site, (cost, path) in paths.items()
    }
    unreachable = tuple(sorted(s for s in known_sites if s != local_site and s not in sites))
    site_domains, ambiguous = _site_domains(connected, published_domains or {}, local_site)
    internal = {d.domain: d.forward_unresolved for d in domains if d.owner == local_site}
    internal = {d: host for d, host in internal.items() if host}
    ours = {d.domain for d in domains if d.owner == local_site}
    relayed_by: dict[str, str] = {}
    for entry in sorted(domains, key=lambda d: d.owner):
        if entry.internal_relay and entry.owner != local_site and entry.domain not in ours:
            relayed_by.setdefault(entry.domain, entry.owner)
    return RoutingTable(
        local_site=local_site,
        sites=sites,
        unreachable=unreachable,
        site_domains=site_domains,
        ambiguous_domains=ambiguous,
        domain_routes=tuple(domain_routes),
        accepted=frozenset(d.lower() for d in accepted),
        internal_relay=internal,
        relayed_by=relayed_by,
        smart_host=smart_host,
        dsa_domain=dsa_domain.lower(),
        sibling_hosts=frozenset(sibling_hosts),
    )


def load_table(directory: Directory, *, smart_host: str = "") -> RoutingTable:
    """The table as the directory (own and replicated objects) has it now."""
    site_objects = directory.list_objects(ObjectKind.SITE)
    published = {
        s.alias: str(s.attrs.get("routing_domain", "")).lower()
        for s in site_objects
        if isinstance(s.attrs.get("routing_domain"), str)
    }
    routes = []
    for entry in list_domain_routes(directory):
        try:
            host, port = parse_nexthop(entry.host)
        except ValueError:
            continue  # validated when added; a bad one must not stop all routing
        routes.append(DomainRoute(entry.domain, host, port))
    return build_table(
        directory.local_site,
        known_sites=[s.alias for s in site_objects],
        published_domains=published,
        connected=list_connected_sites(directory, "*"),
        domain_routes=routes,
        accepted=directory.accepted_domains(),
        domains=list_domains(directory, "*"),
        smart_host=smart_host,
        dsa_domain=directory.routing_domain(),
        sibling_hosts=_sibling_hosts(directory),
    )


def _sibling_hosts(directory: Directory) -> set[str]:
    hosts: set[str] = set()
    for server in directory.list_objects(ObjectKind.SERVER):
        listen = server.attrs.get("listen", [])
        if server.site != directory.local_site and isinstance(listen, list):
            hosts.update(str(h) for h in listen)
    return hosts
