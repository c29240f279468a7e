"""The answer of routing: where one recipient goes next, as a typed value.

`Route(transport, nexthop, recipient)` as in Postfix's transport maps. `nexthop` means, per
transport: local -> the recipient's guid; relay -> "host[:port]" (a domain route, internal
relay host or smart host); mx -> the recipient domain; site -> the directory name of the next
site on the path (the first hop); replication, reject, defer -> "". `rule` names the rule that
decided (router module docstring), `site` the destination site of a site route (the home site,
which may lie beyond the first hop).

`SiteHop` is how the remote transport reaches a directly connected site: the routing address,
the relay host a domain route gives for it (else MX of the routing address), and the pinned
certificate fingerprints (delivery then requires STARTTLS with one of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Route", "Rule", "SiteHop", "Transport"]


class Transport(StrEnum):
    LOCAL = "local"
    RELAY = "relay"
    MX = "mx"
    SITE = "site"
    REPLICATION = "replication"  # this site's directory-service mailbox
    REJECT = "reject"  # a permanent failure decided by routing (unknown user, loop to self)
    DEFER = "defer"  # no route now (no path to the home site yet, or a loop between sites)


class Rule(StrEnum):
    """Which rule of the routing decision matched (DESIGN.md section 2)."""

    DSA = "directory-service"
    DIRECTORY = "directory"
    INTERNAL_RELAY = "internal-relay"
    AUTHORITATIVE = "authoritative"
    DOMAIN_ROUTE = "domain-route"
    SITE_DOMAIN = "site-domain"
    SMART_HOST = "smart-host"
    MX = "mx"
    INVALID = "invalid"


# Rules that need no relay permission at RCPT: the organisation's own recipients and the
# domains it was told to accept or forward. MX and the smart host are relaying.
ACCEPTED_RULES = frozenset(
    {Rule.DSA, Rule.DIRECTORY, Rule.INTERNAL_RELAY, Rule.DOMAIN_ROUTE, Rule.SITE_DOMAIN}
)


@dataclass(frozen=True, slots=True)
class Route:
    transport: Transport
    nexthop: str
    recipient: str
    # For REJECT/DEFER: the status to report, e.g. ("5.1.1", "unknown user").
    status: str = ""
    reason: str = ""
    rule: Rule = Rule.MX
    site: str = ""  # a site route's destination (home) site
    version: int = 0  # a site route: this site's directory version (routing.trace's `v=`)


@dataclass(frozen=True, slots=True)
class SiteHop:
    site: str
    routing_address: str
    relay: str | None  # "host[:port]" from a domain route matching the routing address
    pins: frozenset[str]  # lower-case hex SHA-256 certificate fingerprints; empty: not pinned
