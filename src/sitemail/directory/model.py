"""Directory objects as values: kinds, recipients, proxy addresses.

A recipient's `proxies` list is the replicated truth (Exchange's proxyAddresses): entries are
`SMTP:addr` for the primary and `smtp:addr` for secondaries, one primary per type. The local
`proxy_address` table is an index rebuilt from these lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NewType

__all__ = [
    "RECIPIENT_KINDS",
    "Guid",
    "ObjectKind",
    "Proxy",
    "Recipient",
    "format_proxy",
    "parse_proxy",
]

Guid = NewType("Guid", str)


class ObjectKind(StrEnum):
    SITE = "site"
    SERVER = "server"
    SITE_ADDRESSING = "site_addressing"
    MAILBOX = "mailbox"
    CONTACT = "contact"
    GROUP = "group"
    DOMAIN_ROUTE = "domain_route"  # the IMS E-Mail Domain table: forward a domain to a host
    REPLICATION_CONNECTOR = "replication_connector"  # a Directory Replication Connector
    CONNECTED_SITE = "connected_site"  # the IMS's Connected Sites tab: a site reached by SMTP
    DOMAIN = "domain"  # an accepted domain: authoritative or internal relay


RECIPIENT_KINDS = frozenset({ObjectKind.MAILBOX, ObjectKind.CONTACT, ObjectKind.GROUP})


@dataclass(frozen=True, slots=True)
class Proxy:
    """One proxy address: `type` like "SMTP", the address, and whether it is the primary."""

    type: str
    address: str
    primary: bool

    @property
    def key(self) -> str:
        return self.address.lower()


def split_proxy(text: str) -> tuple[str, str, bool]:
    """`SMTP:a@b` -> ("SMTP", "a@b", primary), `smtp:a@b` -> secondary (Exchange's convention)."""
    prefix, _, address = text.partition(":")
    return prefix.upper(), address, prefix.isupper()


def parse_proxy(text: str) -> Proxy:
    kind, address, primary = split_proxy(text)
    return Proxy(type=kind, address=address, primary=primary)


def format_proxy(proxy: Proxy) -> str:
    prefix = proxy.type.upper() if proxy.primary else proxy.type.lower()
    return f"{prefix}:{proxy.address}"


@dataclass(frozen=True, slots=True)
class Recipient:
    """A mailbox, contact or group as the directory holds it (live or tombstone)."""

    guid: Guid
    site: str
    kind: ObjectKind
    alias: str
    display_name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    usn_changed: int = 0
    version: int = 1
    is_deleted: bool = False

    @property
    def proxies(self) -> list[Proxy]:
        return [parse_proxy(p) for p in self.attrs.get("proxies", [])]

    @property
    def primary_smtp(self) -> str:
        for proxy in self.proxies:
            if proxy.type == "SMTP" and proxy.primary:
                return proxy.address
        return ""

    @property
    def given_name(self) -> str:
        return str(self.attrs.get("given_name", ""))

    @property
    def surname(self) -> str:
        return str(self.attrs.get("surname", ""))

    @property
    def initials(self) -> str:
        return str(self.attrs.get("initials", ""))

    @property
    def target(self) -> str:
        """A contact's external address."""
        return str(self.attrs.get("target", ""))

    @property
    def members(self) -> list[str]:
        """A group's members, as guids."""
        return [str(m) for m in self.attrs.get("members", [])]

    def as_dict(self) -> dict[str, Any]:
        return {
            "guid": self.guid,
            "site": self.site,
            "kind": str(self.kind),
            "alias": self.alias,
            "display_name": self.display_name,
            "attrs": self.attrs,
            "usn_changed": self.usn_changed,
            "version": self.version,
            "is_deleted": self.is_deleted,
        }
