"""Routes for the Internet Mail Service: connected sites, domain routes, accepted domains, the
routing table and `route explain`.

One job: parse, call AdminService (its `routing` part), answer with `web.models`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi import Path as PathParam

from sitemail.web.deps import Service, SiteName
from sitemail.web.models import (
    ConnectedSiteIn,
    ConnectedSiteOut,
    ConnectedSiteUpdate,
    DomainIn,
    DomainOut,
    DomainRouteIn,
    DomainRouteOut,
    ExplainOut,
    RoutingTableOut,
    SiteHopOut,
    SitePathOut,
)

__all__ = ["router"]

router = APIRouter()

Domain = Annotated[str, PathParam(min_length=1, max_length=256)]
Every = Annotated[bool, Query(alias="all", description="Also other sites' (replicated) entries.")]


@router.get("/connected-sites", tags=["IMS"])
def list_connected_sites(service: Service, every: Every = False) -> list[ConnectedSiteOut]:
    """This site's Connected Sites entries (all=true: every site's)."""
    return [ConnectedSiteOut.model_validate(e) for e in service.routing.list_connected_sites(every)]


@router.post("/connected-sites", status_code=status.HTTP_201_CREATED, tags=["IMS"])
def add_connected_site(service: Service, body: ConnectedSiteIn) -> ConnectedSiteOut:
    """Send mail for a site's recipients (and sites beyond it) to its routing address.
    `known` is false when no site of that name is known here yet (the KCC reports it)."""
    entry = service.routing.add_connected_site(
        body.site, body.routing_address, body.cost, body.tls_fingerprint
    )
    return ConnectedSiteOut.model_validate(entry)


@router.patch("/connected-sites/{site}", tags=["IMS"])
def update_connected_site(
    service: Service, site: SiteName, body: ConnectedSiteUpdate
) -> ConnectedSiteOut:
    """Change this site's entry for a site (fields left out stay)."""
    entry = service.routing.update_connected_site(
        site,
        routing_address=body.routing_address,
        cost=body.cost,
        tls_fingerprint=body.tls_fingerprint,
    )
    return ConnectedSiteOut.model_validate(entry)


@router.delete("/connected-sites/{site}", tags=["IMS"])
def remove_connected_site(service: Service, site: SiteName) -> ConnectedSiteOut:
    """Remove this site's entry for a site."""
    return ConnectedSiteOut.model_validate(service.routing.remove_connected_site(site))


@router.get("/domain-routes", tags=["IMS"])
def list_domain_routes(service: Service) -> list[DomainRouteOut]:
    """E-Mail Domain routes: all mail for a domain forwarded to a host (bypasses DNS)."""
    return [DomainRouteOut.model_validate(r) for r in service.list_domain_routes()]


@router.post("/domain-routes", status_code=status.HTTP_201_CREATED, tags=["IMS"])
def add_domain_route(service: Service, body: DomainRouteIn) -> DomainRouteOut:
    """Forward all messages for a domain (and its subdomains; '#domain': exactly it)."""
    return DomainRouteOut.model_validate(service.add_domain_route(body.domain, body.host))


@router.delete("/domain-routes/{domain}", tags=["IMS"])
def remove_domain_route(service: Service, domain: Domain) -> DomainRouteOut:
    """Remove the route for a domain ('%23domain' for an exact-match entry)."""
    return DomainRouteOut.model_validate(service.remove_domain_route(domain))


@router.get("/domains", tags=["IMS"])
def list_domains(service: Service, every: Every = False) -> list[DomainOut]:
    """Accepted domains: authoritative or internal relay."""
    return [DomainOut.model_validate(d) for d in service.routing.list_domains(every)]


@router.post("/domains", status_code=status.HTTP_201_CREATED, tags=["IMS"])
def add_domain(service: Service, body: DomainIn) -> DomainOut:
    """Accept mail for a domain: authoritative, or internal relay (forward_unresolved)."""
    entry = service.routing.add_domain(body.domain, body.internal_relay, body.forward_unresolved)
    return DomainOut.model_validate(entry)


@router.delete("/domains/{domain}", tags=["IMS"])
def remove_domain(service: Service, domain: Domain) -> DomainOut:
    """Stop accepting a domain as one of this site's."""
    return DomainOut.model_validate(service.routing.remove_domain(domain))


@router.get("/routing/table", tags=["routing"])
def routing_table(service: Service) -> RoutingTableOut:
    """Paths to other sites, site routing addresses, domains, domain routes, the smart host."""
    table = service.routing.table()
    return RoutingTableOut(
        site=table.local_site,
        sites=[
            SitePathOut(
                site=p.site,
                path=list(p.path),
                cost=p.cost,
                first_hop=p.first_hop,
                routing_address=p.routing_address,
                tls_pinned=bool(p.tls_fingerprint),
            )
            for p in sorted(table.sites.values(), key=lambda p: p.site)
        ],
        unreachable_sites=list(table.unreachable),
        site_domains=dict(sorted(table.site_domains.items())),
        ambiguous_site_domains=list(table.ambiguous_domains),
        domain_routes=[DomainRouteIn(domain=r.domain, host=r.nexthop) for r in table.domain_routes],
        internal_relay=dict(sorted(table.internal_relay.items())),
        relayed_by_site=dict(sorted(table.relayed_by.items())),
        accepted_domains=sorted(table.accepted),
        smart_host=table.smart_host,
    )


@router.get("/route/explain", tags=["routing"])
def route_explain(
    service: Service,
    address: Annotated[str, Query(min_length=1, max_length=1024, description="The recipient.")],
    sender: Annotated[
        str | None,
        Query(alias="from", max_length=1024, description="The envelope sender ('<>': a DSN)."),
    ] = None,
) -> ExplainOut:
    """Where mail for an address goes from this site, and why, step by step."""
    report = service.routing.explain(address, sender)
    route, hop = report.route, report.hop
    return ExplainOut(
        address=report.address,
        transport=str(route.transport),
        nexthop=route.nexthop,
        site=route.site,
        rule=str(route.rule),
        status=route.status,
        reason=route.reason,
        steps=list(report.steps),
        smtp_policy=report.policy,
        site_hop=None
        if hop is None
        else SiteHopOut(
            site=hop.site,
            routing_address=hop.routing_address,
            relay=hop.relay,
            tls_pinned=bool(hop.pins),
        ),
        sender=report.sender_note,
    )
