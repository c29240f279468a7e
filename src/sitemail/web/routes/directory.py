"""Routes for the organisation, this site's key, recipients and Site Addressing.

One job: parse, call AdminService, answer with the models of `web.models` (no decisions here).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi import Path as PathParam

from sitemail.admin.routing import certificate_fingerprint
from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind, Recipient, RecipientChanges
from sitemail.web.deps import Service
from sitemail.web.models import (
    AddressingChange,
    AddressingCollision,
    AddressingIn,
    AddressingOut,
    AddressingResultOut,
    RecipientIn,
    RecipientKind,
    RecipientOut,
    RecipientUpdate,
    SiteKeyOut,
    SiteOut,
    SitesOut,
)

__all__ = ["recipient_out", "router"]

router = APIRouter()

Ref = Annotated[
    str,
    PathParam(min_length=1, max_length=512, description="Alias, any of its addresses, or guid."),
]
KindFilter = Annotated[RecipientKind | None, Query(description="Only this kind.")]


@router.get("/sites", tags=["organisation"])
def sites(service: Service) -> SitesOut:
    """The organisation as this site knows it (its own site and the replicated ones)."""
    info = service.org()
    report = service.replication.kcc()
    return SitesOut(
        organization=info.name,
        site=info.local_site,
        server=info.local_server,
        addressing=service.addressing(),
        sites=[SiteOut.model_validate(s) for s in report.sites],
    )


@router.get("/site/key", tags=["organisation"])
def site_key(service: Service) -> SiteKeyOut:
    """This site's public key (what peers pin as --peer-key) and the TLS certificate's."""
    token, fingerprint = service.site_key()
    return SiteKeyOut(
        public_key=token,
        fingerprint=fingerprint,
        tls_fingerprint=certificate_fingerprint(service.config),
    )


# -- recipients ----------------------------------------------------------------------------------


def recipient_out(service: AdminService, r: Recipient) -> RecipientOut:
    attrs = r.attrs
    members = [m.alias for m in service.members(r)] if r.kind is ObjectKind.GROUP else []
    return RecipientOut(
        guid=r.guid,
        kind=RecipientKind(str(r.kind)),
        alias=r.alias,
        site=r.site,
        display_name=r.display_name,
        primary_address=r.primary_smtp,
        addresses=[p.address for p in r.proxies],
        proxies=list(attrs.get("proxies", [])),
        given_name=str(attrs.get("given_name", "")),
        surname=str(attrs.get("surname", "")),
        initials=str(attrs.get("initials", "")),
        target=str(attrs.get("target", "")),
        members=members,
        usn=r.usn_changed,
        version=r.version,
        read_only=r.site != service.directory.local_site,
    )


def _kind(kind: RecipientKind | None) -> ObjectKind | None:
    return None if kind is None else ObjectKind(kind.value)


@router.get("/recipients", tags=["recipients"])
def list_recipients(
    service: Service,
    kind: KindFilter = None,
    site: Annotated[str | None, Query(max_length=256, description="Only this site's.")] = None,
) -> list[RecipientOut]:
    """Mailboxes, contacts and groups of every site the directory holds (or of one)."""
    return [recipient_out(service, r) for r in service.list_recipients(_kind(kind), site)]


@router.post("/recipients", status_code=status.HTTP_201_CREATED, tags=["recipients"])
def add_recipient(service: Service, body: RecipientIn) -> RecipientOut:
    """Create a mailbox, contact or group, addressed by the site's template."""
    r = service.add_recipient(
        ObjectKind(body.kind.value),
        body.alias,
        display_name=body.display_name,
        given_name=body.given_name,
        surname=body.surname,
        initials=body.initials,
        target=body.target,
        members=body.members,
        extra_addresses=body.addresses,
        password=body.password,
    )
    return recipient_out(service, r)


@router.get("/recipients/{ref}", tags=["recipients"])
def get_recipient(service: Service, ref: Ref, kind: KindFilter = None) -> RecipientOut:
    """One recipient with all its addresses."""
    return recipient_out(service, service.get_recipient(ref, _kind(kind)))


@router.patch("/recipients/{ref}", tags=["recipients"])
def update_recipient(
    service: Service, ref: Ref, body: RecipientUpdate, kind: KindFilter = None
) -> RecipientOut:
    """Change names, target, addresses, members or password; fields left out stay."""
    changes = RecipientChanges(
        display_name=body.display_name,
        given_name=body.given_name,
        surname=body.surname,
        initials=body.initials,
        target=body.target,
        add_addresses=body.add_addresses,
        remove_addresses=body.remove_addresses,
        primary_address=body.primary_address,
    )
    r = service.update_recipient(ref, changes, _kind(kind), body.password)
    if body.add_members or body.remove_members:
        r = service.set_members(r.guid, body.add_members, body.remove_members)
    return recipient_out(service, r)


@router.delete("/recipients/{ref}", tags=["recipients"])
def remove_recipient(service: Service, ref: Ref, kind: KindFilter = None) -> RecipientOut:
    """Delete a recipient (a tombstone replicates the deletion); answers it as it was."""
    return recipient_out(service, service.remove_recipient(ref, _kind(kind)))


# -- site addressing ----------------------------------------------------------------------------


@router.get("/addressing", tags=["site addressing"])
def get_addressing(service: Service) -> AddressingOut:
    """This site's SMTP address template."""
    return AddressingOut(site=service.directory.local_site, smtp=service.addressing())


@router.post("/addressing", tags=["site addressing"])
def set_addressing(service: Service, body: AddressingIn) -> AddressingResultOut:
    """Change the SMTP template; with update_recipients re-address every recipient of the
    site (dry_run: only say what would change)."""
    result = service.set_addressing(
        "smtp",
        body.smtp,
        update_recipients=body.update_recipients,
        drop_old=body.drop_old,
        dry_run=body.dry_run,
    )
    plan = result.plan
    return AddressingResultOut(
        old_template=result.old_template,
        new_template=result.new_template,
        dry_run=body.dry_run,
        recipients_updated=plan is not None and not body.dry_run,
        updated=result.updated,
        changes=[
            AddressingChange(alias=c.recipient.alias, old=c.old_primary, new=c.new_primary)
            for c in (plan.changed if plan else [])
        ],
        collisions=[
            AddressingCollision.model_validate(c) for c in (plan.collisions if plan else [])
        ],
    )
