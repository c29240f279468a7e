"""Routes for directory replication: connectors, Request Now, status, pending partners and the
KCC's Check Now.

One job: parse, call AdminService (its `replication` part), answer with `web.models`; after a
change that queued a replication message, wake the queue (as the CLI pokes the server).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, status

from sitemail.replication.keys import shown_fingerprint
from sitemail.replication.state import Pending
from sitemail.web.deps import Service, SiteName, Wake
from sitemail.web.models import (
    ConnectorIn,
    ConnectorOut,
    ConnectorUpdate,
    KccOut,
    KccWarningOut,
    PeerOut,
    PendingAcceptIn,
    PendingOut,
    ReplicationStatusOut,
    RequestNowIn,
    RequestOutcomeOut,
    SiteOut,
)

__all__ = ["router"]

router = APIRouter()


@router.get("/replication/connectors", tags=["replication"])
def list_connectors(service: Service) -> list[ConnectorOut]:
    """This site's Directory Replication Connectors."""
    return [ConnectorOut.model_validate(c) for c in service.replication.list_connectors()]


@router.post("/replication/connectors", status_code=status.HTTP_201_CREATED, tags=["replication"])
def add_connector(service: Service, wake: Wake, body: ConnectorIn) -> ConnectorOut:
    """Replicate from a site: pin its key and pull its directory on a schedule."""
    connector = service.replication.add_connector(
        body.site,
        bridgehead=body.bridgehead,
        routing_address=body.routing_address,
        peer_key=body.peer_key,
        schedule=body.schedule,
    )
    wake()
    return ConnectorOut.model_validate(connector)


@router.patch("/replication/connectors/{site}", tags=["replication"])
def update_connector(
    service: Service, wake: Wake, site: SiteName, body: ConnectorUpdate
) -> ConnectorOut:
    """Change a connector's bridgehead, routing address or schedule (fields left out stay)."""
    connector = service.replication.update_connector(
        site,
        bridgehead=body.bridgehead,
        routing_address=body.routing_address,
        schedule=body.schedule,
    )
    wake()  # a shorter schedule may make a request due now
    return ConnectorOut.model_validate(connector)


@router.delete("/replication/connectors/{site}", tags=["replication"])
def remove_connector(service: Service, site: SiteName) -> ConnectorOut:
    """Stop replicating with a site (its replicas stay until their tombstones come)."""
    return ConnectorOut.model_validate(service.replication.remove_connector(site))


@router.post("/replication/{site}/request-now", tags=["replication"])
def request_now(
    service: Service,
    wake: Wake,
    site: SiteName,
    body: Annotated[RequestNowIn | None, Body()] = None,
) -> RequestOutcomeOut:
    """Pull new and modified items from a site now (refresh_all: everything from USN 0)."""
    outcome = service.replication.request_now(site, refresh_all=bool(body and body.refresh_all))
    wake()  # sent, or an earlier request made due again: either way the queue has work
    return RequestOutcomeOut.model_validate(outcome)


def _pending_out(p: Pending) -> PendingOut:
    return PendingOut(
        site=p.origin,
        state=p.state,
        requests=p.requests,
        first_seen=p.first_seen,
        last_seen=p.last_seen,
        routing_address=p.routing_address,
        bridgehead=p.bridgehead,
        public_key=p.public_key,
        fingerprint=shown_fingerprint(p.public_key),
        key_verified=p.verified,
        network=p.source,
    )


@router.get("/replication/status", tags=["replication"])
def replication_status(service: Service) -> ReplicationStatusOut:
    """Per peer and naming context: watermarks, last request and answer, lag, backlog."""
    report = service.replication.status()
    return ReplicationStatusOut(
        site=report.site,
        watermarks=report.watermarks,
        peers=[PeerOut.model_validate(p) for p in report.peers],
        pending_partners=[_pending_out(p) for p in report.pending],
        rejected=report.rejected,
    )


@router.get("/replication/pending", tags=["replication"])
def list_pending(service: Service) -> list[PendingOut]:
    """Sites whose requests are held because they have no connector here."""
    return [_pending_out(p) for p in service.replication.pending()]


@router.post("/replication/pending/{site}/accept", tags=["replication"])
def accept_pending(
    service: Service,
    wake: Wake,
    site: SiteName,
    body: Annotated[PendingAcceptIn | None, Body()] = None,
) -> ConnectorOut:
    """Add a connector with the key the held request carried, and answer that request
    (with `fingerprint`, only if the held key has exactly it)."""
    options = body or PendingAcceptIn()
    connector = service.replication.accept_pending(
        site, schedule=options.schedule, fingerprint=options.fingerprint
    )
    wake()
    return ConnectorOut.model_validate(connector)


@router.post("/replication/pending/{site}/reject", tags=["replication"])
def reject_pending(service: Service, site: SiteName) -> PendingOut:
    """Keep ignoring a site's requests (they stay held, unanswered)."""
    return _pending_out(service.replication.reject_pending(site))


@router.post("/kcc/check-now", tags=["replication"])
def kcc_check_now(service: Service) -> KccOut:
    """The Knowledge Consistency Check: known sites, topology, warnings with their fixes."""
    report = service.replication.kcc()
    return KccOut(
        site=report.local_site,
        sites=[SiteOut.model_validate(s) for s in report.sites],
        connectors=[ConnectorOut.model_validate(c) for c in report.connectors],
        warnings=[KccWarningOut.model_validate(w) for w in report.warnings],
    )
