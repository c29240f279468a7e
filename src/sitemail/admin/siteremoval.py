"""Removing a site from the organisation, at one remaining site (`sitemail site remove`).

One job: Exchange's "remove site" procedure for this site's part: take away this site's
replication connector, its Connected Sites entry and its domain routes to the removed site
(tombstones that replicate), forget the removed site's replica and replication records
(replication/forget.py), and report what mail this server still has queued for that site.
`dry_run` reports the same and changes nothing. Run it at every remaining site: each owns
its own connectors and routes; the report names other sites' entries still naming the
removed one (they go when it is run there and replication brings their tombstones).
Queued mail for the removed site is reported, never dropped: with its recipients gone from
the directory, each bounces with a DSN once `[replication] unknown_recipient_window` passes
(or the admin deletes it with `sitemail queue delete`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sitemail.admin.replication import ReplicationAdmin
from sitemail.admin.routing import RoutingAdmin
from sitemail.core.errors import InvalidValueError, NotFoundError
from sitemail.directory import Directory, ObjectKind, list_domain_routes, remove_domain_route
from sitemail.directory.config_objects import DomainRouteEntry
from sitemail.directory.ims_objects import ConnectedSite, list_connected_sites
from sitemail.queue.admin import QueueAdmin
from sitemail.replication.connectors import Connector, all_connectors, connector_for
from sitemail.replication.forget import REMOVED_SITES, count_replica, forget_site, removed_sites
from sitemail.routing.route import Transport

__all__ = ["QueuedFor", "RemovalReport", "remove_site"]


@dataclass(frozen=True, slots=True)
class QueuedFor:
    """One queued recipient whose mail goes to the removed site."""

    queue_id: str
    recipient: str
    sender: str


@dataclass(frozen=True, slots=True)
class RemovalReport:
    site: str
    dry_run: bool
    connector: Connector | None  # this site's replication connector to it
    connected_site: ConnectedSite | None  # this site's Connected Sites entry for it
    domain_routes: tuple[DomainRouteEntry, ...]  # this site's routes to its domains
    replica_objects: int  # its directory objects held here (tombstones included)
    replica_addresses: int  # their proxy addresses
    queued: tuple[QueuedFor, ...]  # mail here still bound for it
    elsewhere: tuple[str, ...]  # other sites' entries still naming it ("SiteC's connector")

    @property
    def nothing(self) -> bool:
        return not (
            self.connector
            or self.connected_site
            or self.domain_routes
            or self.replica_objects
            or self.queued
        )


def _its_domains(directory: Directory, site: str, connector: Connector | None) -> set[str]:
    """The domains that lead to `site` alone: its routing domain and what our connector and
    entries name, never a domain a remaining site uses (a shared company domain)."""
    domains: set[str] = set()
    if connector is not None:
        domains.add(connector.routing_address.lower().lstrip("@"))
    for entry in list_connected_sites(directory):
        if entry.site == site:
            domains.add(entry.routing_address.lower().lstrip("@"))
    with contextlib.suppress(NotFoundError):  # its site object is gone (a second run)
        domains.add(directory.routing_domain(site))
    kept: set[str] = set()
    for other in directory.list_objects(ObjectKind.SITE):
        if other.alias != site:
            kept |= {directory.routing_domain(other.alias), directory.template(other.alias).domain}
    return {d for d in domains if d and d not in kept}


def _routes_to(directory: Directory, domains: set[str]) -> tuple[DomainRouteEntry, ...]:
    """This site's domain routes for those domains or below them."""
    return tuple(
        r
        for r in list_domain_routes(directory)
        if any(r.domain.lstrip("#") == d or r.domain.lstrip("#").endswith("." + d) for d in domains)
    )


def _queued_for(
    queue: QueueAdmin, routing: RoutingAdmin, site: str, hosts: set[str]
) -> tuple[QueuedFor, ...]:
    """Queued recipients routed to `site` (or to a relay host only it uses)."""
    router = routing.router()
    found = []
    for entry in queue.entries():
        for r in entry.recipients:
            if r.state != "queued":
                continue
            route = router.route(r.address)
            to_site = route.transport is Transport.SITE and site in (route.site, route.nexthop)
            to_host = route.transport is Transport.RELAY and route.nexthop in hosts
            if to_site or to_host:
                found.append(QueuedFor(entry.queue_id, r.address, entry.sender))
    return tuple(found)


def _elsewhere(directory: Directory, site: str) -> tuple[str, ...]:
    """Other remaining sites' connectors and entries that still name `site`."""
    local = directory.local_site
    named = [
        f"{c.owner}'s replication connector" for c in all_connectors(directory) if c.site == site
    ]
    named += [
        f"{e.owner}'s connected-site entry"
        for e in list_connected_sites(directory, "*")
        if e.site == site
    ]
    return tuple(sorted(n for n in named if not n.startswith((f"{local}'s", f"{site}'s"))))


def remove_site(
    directory: Directory,
    replication: ReplicationAdmin,
    routing: RoutingAdmin,
    queue: QueueAdmin,
    site: str,
    *,
    dry_run: bool = False,
) -> RemovalReport:
    """Remove `site` here (or, with `dry_run`, only say what would go)."""
    if site == directory.local_site:
        raise InvalidValueError(
            f"{site} is this site: remove a site from one of the sites that remain"
        )
    connector = connector_for(directory, site)
    entry = next((e for e in list_connected_sites(directory) if e.site == site), None)
    routes = _routes_to(directory, _its_domains(directory, site, connector))
    with directory.store.read() as conn:
        replica = count_replica(conn, site)
        already = site in removed_sites(conn, directory.local_site)
    if not (already or replica.objects or connector or entry):
        raise NotFoundError(f"no site {site!r} is known here (sitemail kcc check-now lists them)")
    report = RemovalReport(
        site=site,
        dry_run=dry_run,
        connector=connector,
        connected_site=entry,
        domain_routes=routes,
        replica_objects=replica.objects,
        replica_addresses=replica.addresses,
        queued=_queued_for(queue, routing, site, {r.host for r in routes}),
        elsewhere=_elsewhere(directory, site),
    )
    if dry_run:
        return report
    if connector is not None:
        replication.remove_connector(site)  # also drops our replication mail queued for it
    if entry is not None:
        routing.remove_connected_site(site)
    for route in routes:
        remove_domain_route(directory, route.domain)
    if not already:
        with directory.store.read() as conn:
            names = sorted(removed_sites(conn, directory.local_site) | {site})
        directory.update_site_attrs(**{REMOVED_SITES: names})
    with directory.store.write() as conn:
        forget_site(conn, site)
    return report
