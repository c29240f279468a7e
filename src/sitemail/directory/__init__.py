"""The directory: organisation, sites, servers, recipients, proxy addresses, Site Addressing.

Each site is the only writer of its naming context; USNs order its changes; deletes leave
tombstones; proxy addresses are unique across the organisation.
"""

from sitemail.directory.addressing import AddressFields, Template, parse_template
from sitemail.directory.config_objects import (
    DomainRouteEntry,
    add_domain_route,
    list_domain_routes,
    remove_domain_route,
)
from sitemail.directory.model import (
    RECIPIENT_KINDS,
    Guid,
    ObjectKind,
    Proxy,
    Recipient,
    format_proxy,
    parse_proxy,
)
from sitemail.directory.passwords import hash_password, verify_password
from sitemail.directory.readdress import Collision, ReaddressPlan
from sitemail.directory.service import (
    AddressingResult,
    AddressOwner,
    Directory,
    OrgInfo,
    RecipientChanges,
    set_addressing,
)
from sitemail.directory.transfer import ImportReport, export_lines, import_lines

__all__ = [
    "RECIPIENT_KINDS",
    "AddressFields",
    "AddressOwner",
    "AddressingResult",
    "Collision",
    "Directory",
    "DomainRouteEntry",
    "Guid",
    "ImportReport",
    "ObjectKind",
    "OrgInfo",
    "Proxy",
    "ReaddressPlan",
    "Recipient",
    "RecipientChanges",
    "Template",
    "add_domain_route",
    "export_lines",
    "format_proxy",
    "hash_password",
    "import_lines",
    "list_domain_routes",
    "parse_proxy",
    "parse_template",
    "remove_domain_route",
    "set_addressing",
    "verify_password",
]
