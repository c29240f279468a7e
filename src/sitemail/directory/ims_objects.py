"""The IMS's site-to-site configuration in the directory: Connected Sites and accepted domains.

One job: add, list and remove this site's `connected_site` and `domain` objects. Like domain
routes and replication connectors they live in the owning site's naming context and replicate,
because other sites need them: a site reached only through an intermediate site is found
through that site's replicated Connected Sites entries (seed item 11), and a domain another
site relays for is routed to that site.

- A Connected Sites entry (KB Q196927, "Connected Sites" tab): the remote site's *directory*
  name, the routing address (the domain mail for that site is sent to, written with or without
  a leading `@`, seed X1), a cost 1-100 (default 1) and optionally the SHA-256 fingerprint of
  the peer's TLS certificate: when pinned, delivery to that site requires STARTTLS with exactly
  that certificate. A name that matches no known site is accepted (replication may bring it
  later) and reported: the caller warns, the KCC keeps warning while it stays unknown.
- A domain: `authoritative` (unknown recipients are refused at RCPT, the default) or
  `internal_relay` with a `forward_unresolved` host (shared address space with another mail
  system: recipients not in the directory go to that host; seed section 4, item 4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from sitemail.core.address import normalize_domain
from sitemail.core.errors import (
    ConflictError,
    InvalidAddressError,
    InvalidValueError,
    NotFoundError,
)
from sitemail.directory.config_objects import validate_host
from sitemail.directory.model import ObjectKind, Recipient
from sitemail.directory.objects import insert_object, row_to_recipient, update_object
from sitemail.directory.service import Directory, check_name
from sitemail.store.tables import dir_object

__all__ = [
    "DEFAULT_COST",
    "MAX_COST",
    "ConnectedSite",
    "DomainEntry",
    "add_connected_site",
    "add_domain",
    "list_connected_sites",
    "list_domains",
    "normalize_fingerprint",
    "normalize_routing_address",
    "remove_connected_site",
    "remove_domain",
    "update_connected_site",
]

DEFAULT_COST = 1  # Exchange's connector cost: 1-100, default 1 (DOC xog06005)
MAX_COST = 100
AUTHORITATIVE = "authoritative"
INTERNAL_RELAY = "internal_relay"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class ConnectedSite:
    site: str  # the remote site's directory name
    routing_address: str  # the domain mail for that site is addressed to, without "@"
    cost: int
    tls_fingerprint: str  # "" or 64 lower-case hex digits (SHA-256 of the peer's certificate)
    owner: str  # the site whose entry this is
    known: bool = True  # whether the directory holds a site of that name


@dataclass(frozen=True, slots=True)
class DomainEntry:
    domain: str
    type: str  # AUTHORITATIVE or INTERNAL_RELAY
    forward_unresolved: str  # host[:port] for internal relay, else ""
    owner: str

    @property
    def internal_relay(self) -> bool:
        return self.type == INTERNAL_RELAY


def normalize_routing_address(text: str) -> str:
    """`@SiteB.example.com` and `siteb.example.com.` -> `siteb.example.com` (seed X1)."""
    try:
        return normalize_domain(text.strip().removeprefix("@"))
    except InvalidAddressError as exc:
        raise InvalidValueError(f"bad routing address {text!r}: {exc.message}") from exc


def normalize_fingerprint(text: str) -> str:
    """`SHA256:AB:CD:...`, `ab cd ...` or plain hex -> 64 lower-case hex digits."""
    value = text.strip()
    value = value[7:] if value.upper().startswith("SHA256:") else value
    value = value.replace(":", "").replace(" ", "").lower()
    if not _HEX64.match(value):
        raise InvalidValueError(
            f"not a SHA-256 certificate fingerprint (64 hex digits): {text!r}; "
            "`sitemail site show` at the other site prints it"
        )
    return value


# -- shared: this site's live object of a kind and name ---------------------------------------


def _find_own(conn: Connection, site: str, kind: ObjectKind, name: str) -> Recipient | None:
    row = conn.execute(
        select(dir_object).where(
            dir_object.c.site == site,
            dir_object.c.kind == str(kind),
            dir_object.c.name == name,
            dir_object.c.is_deleted.is_(False),
        )
    ).first()
    return None if row is None else row_to_recipient(row)


def _remove_own(directory: Directory, kind: ObjectKind, name: str, what: str) -> Recipient:
    with directory.store.write() as conn:
        obj = _find_own(conn, directory.local_site, kind, name)
        if obj is None:
            raise NotFoundError(f"no {what} {name} at {directory.local_site}")
        update_object(conn, obj, now=directory.clock.now(), attrs={}, is_deleted=True)
    return obj


# -- Connected Sites --------------------------------------------------------------------------


def add_connected_site(
    directory: Directory,
    site: str,
    *,
    routing_address: str,
    cost: int = DEFAULT_COST,
    tls_fingerprint: str = "",
) -> ConnectedSite:
    """Add this site's entry for `site` (ConflictError if it exists, InvalidValueError for bad
    values). The result's `known` says whether the directory holds that site yet."""
    check_name("site name", site)
    if site == directory.local_site:
        raise InvalidValueError(f"{site} is this site: a connected site is another site")
    if not 1 <= cost <= MAX_COST:
        raise InvalidValueError(f"cost must be between 1 and {MAX_COST}, got {cost}")
    address = normalize_routing_address(routing_address)
    pin = normalize_fingerprint(tls_fingerprint) if tls_fingerprint.strip() else ""
    sites = {s.alias for s in directory.list_objects(ObjectKind.SITE)}
    _refuse_case_variant(site, sites)
    attrs: dict[str, Any] = {"routing_address": address, "cost": cost}
    if pin:
        attrs["tls_fingerprint"] = pin
    with directory.store.write() as conn:
        if _find_own(conn, directory.local_site, ObjectKind.CONNECTED_SITE, site) is not None:
            raise ConflictError(f"{site} is a connected site already: remove it first")
        insert_object(
            conn,
            site=directory.local_site,
            kind=ObjectKind.CONNECTED_SITE,
            name=site,
            display_name=f"Connected site {site} via {address}",
            attrs=attrs,
            now=directory.clock.now(),
        )
    return ConnectedSite(site, address, cost, pin, directory.local_site, site in sites)


def update_connected_site(
    directory: Directory,
    site: str,
    *,
    routing_address: str | None = None,
    cost: int | None = None,
    tls_fingerprint: str | None = None,
) -> ConnectedSite:
    """Change this site's entry for `site` (None: leave as is; an empty TLS fingerprint
    removes the pin). The change replicates like any other; NotFoundError if there is none."""
    if cost is not None and not 1 <= cost <= MAX_COST:
        raise InvalidValueError(f"cost must be between 1 and {MAX_COST}, got {cost}")
    address = normalize_routing_address(routing_address) if routing_address is not None else None
    pin = tls_fingerprint.strip() if tls_fingerprint is not None else None
    pin = normalize_fingerprint(pin) if pin else pin
    with directory.store.write() as conn:
        obj = _find_own(conn, directory.local_site, ObjectKind.CONNECTED_SITE, site)
        if obj is None:
            raise NotFoundError(f"no connected site {site} at {directory.local_site}")
        attrs = dict(obj.attrs)
        if address is not None:
            attrs["routing_address"] = address
        if cost is not None:
            attrs["cost"] = cost
        if pin is not None:
            attrs.pop("tls_fingerprint", None)
            if pin:
                attrs["tls_fingerprint"] = pin
        changed = update_object(
            conn,
            obj,
            now=directory.clock.now(),
            attrs=attrs,
            display_name=f"Connected site {site} via {attrs['routing_address']}",
        )
    known = {s.alias for s in directory.list_objects(ObjectKind.SITE)}
    return connected_site_from(changed, known)


def _refuse_case_variant(site: str, known: set[str]) -> None:
    """`siteb` when the directory knows `SiteB` is a typo, not a site to wait for."""
    if site in known:
        return
    same = sorted(name for name in known if name.lower() == site.lower())
    if same:
        raise InvalidValueError(
            f"no site is named {site!r}, but {same[0]!r} is: site names are case-sensitive"
        )


def connected_site_from(obj: Recipient, known: set[str] | None = None) -> ConnectedSite:
    attrs = obj.attrs
    cost = attrs.get("cost", DEFAULT_COST)
    return ConnectedSite(
        site=obj.alias,
        routing_address=str(attrs.get("routing_address", "")),
        cost=cost if type(cost) is int and 1 <= cost <= MAX_COST else DEFAULT_COST,
        tls_fingerprint=str(attrs.get("tls_fingerprint", "")),
        owner=obj.site,
        known=True if known is None else obj.alias in known,
    )


def list_connected_sites(directory: Directory, owner: str | None = None) -> list[ConnectedSite]:
    """Connected Sites entries of `owner` (default: this site); owner "*" for every site's."""
    site = None if owner == "*" else owner or directory.local_site
    known = {s.alias for s in directory.list_objects(ObjectKind.SITE)}
    objects = directory.list_objects(ObjectKind.CONNECTED_SITE, site=site)
    return [connected_site_from(o, known) for o in objects]


def remove_connected_site(directory: Directory, site: str) -> ConnectedSite:
    obj = _remove_own(directory, ObjectKind.CONNECTED_SITE, site, "connected site")
    return connected_site_from(obj)


# -- accepted domains -------------------------------------------------------------------------


def add_domain(
    directory: Directory,
    domain: str,
    *,
    internal_relay: bool = False,
    forward_unresolved: str = "",
) -> DomainEntry:
    try:
        name = normalize_domain(domain)
    except InvalidAddressError as exc:
        raise InvalidValueError(f"bad domain {domain!r}: {exc.message}") from exc
    if internal_relay and not forward_unresolved.strip():
        raise InvalidValueError(
            "--internal-relay needs --forward-unresolved HOST: the mail system that holds "
            "the recipients this organisation does not know"
        )
    if forward_unresolved.strip() and not internal_relay:
        raise InvalidValueError("--forward-unresolved applies to --internal-relay domains only")
    host = validate_host(forward_unresolved) if internal_relay else ""
    kind = INTERNAL_RELAY if internal_relay else AUTHORITATIVE
    attrs: dict[str, Any] = {"type": kind}
    if host:
        attrs["forward_unresolved"] = host
    with directory.store.write() as conn:
        if _find_own(conn, directory.local_site, ObjectKind.DOMAIN, name) is not None:
            raise ConflictError(f"{name} is an accepted domain already: remove it first")
        insert_object(
            conn,
            site=directory.local_site,
            kind=ObjectKind.DOMAIN,
            name=name,
            display_name=name,
            attrs=attrs,
            now=directory.clock.now(),
        )
    return DomainEntry(name, kind, host, directory.local_site)


def domain_from(obj: Recipient) -> DomainEntry:
    kind = obj.attrs.get("type")
    return DomainEntry(
        domain=obj.alias,
        type=INTERNAL_RELAY if kind == INTERNAL_RELAY else AUTHORITATIVE,
        forward_unresolved=str(obj.attrs.get("forward_unresolved", "")),
        owner=obj.site,
    )


def list_domains(directory: Directory, owner: str | None = None) -> list[DomainEntry]:
    """Accepted domains of `owner` (default: this site); owner "*" for every site's."""
    site = None if owner == "*" else owner or directory.local_site
    return [domain_from(o) for o in directory.list_objects(ObjectKind.DOMAIN, site=site)]


def remove_domain(directory: Directory, domain: str) -> DomainEntry:
    try:
        name = normalize_domain(domain)
    except InvalidAddressError as exc:
        raise InvalidValueError(f"bad domain {domain!r}: {exc.message}") from exc
    return domain_from(_remove_own(directory, ObjectKind.DOMAIN, name, "accepted domain"))
