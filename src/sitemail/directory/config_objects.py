"""Site configuration objects kept in the directory: the IMS's E-Mail Domain routes.

One job: add, list and remove `domain_route` objects of this site ("forward all messages for
this domain to host", KB Q196927). They live in the site's naming context like every other
configuration object (so they replicate and other sites can see them), but only the owning
site's routes steer its own IMS.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from sqlalchemy import func, select

from sitemail.core.address import normalize_domain
from sitemail.core.errors import ConflictError, InvalidValueError, NotFoundError
from sitemail.directory.model import ObjectKind
from sitemail.directory.objects import insert_object, row_to_recipient, update_object
from sitemail.directory.service import Directory
from sitemail.store.tables import dir_object

__all__ = ["DomainRouteEntry", "add_domain_route", "list_domain_routes", "remove_domain_route"]

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$")


@dataclass(frozen=True, slots=True)
class DomainRouteEntry:
    domain: str  # "example.com" (suffix match) or "#example.com" (exact match only)
    host: str  # "host", "1.2.3.4", "[::1]", optionally ":port"
    site: str


def normalize_route_domain(text: str) -> str:
    exact = text.strip().startswith("#")
    domain = normalize_domain(text.strip().lstrip("#"))
    return f"#{domain}" if exact else domain


def validate_host(text: str) -> str:
    host = text.strip()
    match = _HOST.match(host)
    if not match or (match.group(2) and not 0 < int(match.group(2)) < 65536):
        raise InvalidValueError(f"not a host, IP address or host:port: {text!r}")
    _check_address(match.group(1), text)
    return host


def _check_address(name: str, text: str) -> None:
    """What looks like an IP address must be one: a name's last label is never all digits
    (RFC 3696 section 2), so `999.1.1.1` is a wrong address, not a host name."""
    literal = name[1:-1] if name.startswith("[") else name
    if not name.startswith("[") and not literal.rsplit(".", 1)[-1].isdigit():
        return
    try:
        ipaddress.ip_address(literal)
    except ValueError:
        raise InvalidValueError(
            f"not an IP address: {literal!r} in {text!r} (IPv4: four numbers 0-255; "
            "IPv6 in brackets, e.g. [2001:db8::1]:25)"
        ) from None


def add_domain_route(directory: Directory, domain: str, host: str) -> DomainRouteEntry:
    name = normalize_route_domain(domain)
    host = validate_host(host)
    site = directory.local_site
    with directory.store.write() as conn:
        exists = conn.execute(
            select(func.count())
            .select_from(dir_object)
            .where(
                dir_object.c.site == site,
                dir_object.c.kind == str(ObjectKind.DOMAIN_ROUTE),
                dir_object.c.name == name,
                dir_object.c.is_deleted.is_(False),
            )
        ).scalar_one()
        if exists:
            raise ConflictError(f"a route for {name} exists already: remove it first")
        insert_object(
            conn,
            site=site,
            kind=ObjectKind.DOMAIN_ROUTE,
            name=name,
            display_name=name,
            attrs={"host": host},
            now=directory.clock.now(),
        )
    return DomainRouteEntry(name, host, site)


def list_domain_routes(directory: Directory, site: str | None = None) -> list[DomainRouteEntry]:
    objects = directory.list_objects(ObjectKind.DOMAIN_ROUTE, site=site or directory.local_site)
    return [DomainRouteEntry(o.alias, str(o.attrs["host"]), o.site) for o in objects]


def remove_domain_route(directory: Directory, domain: str) -> DomainRouteEntry:
    name = normalize_route_domain(domain)
    with directory.store.write() as conn:
        row = conn.execute(
            select(dir_object).where(
                dir_object.c.site == directory.local_site,
                dir_object.c.kind == str(ObjectKind.DOMAIN_ROUTE),
                dir_object.c.name == name,
                dir_object.c.is_deleted.is_(False),
            )
        ).first()
        if row is None:
            raise NotFoundError(f"no domain route for {name}")
        obj = row_to_recipient(row)
        update_object(conn, obj, now=directory.clock.now(), attrs={}, is_deleted=True)
    return DomainRouteEntry(name, str(obj.attrs.get("host", "")), obj.site)
