"""The answer of routing: where one recipient goes next, as a typed value.

`Route(transport, nexthop, recipient)` as in Postfix's transport maps. `nexthop` means, per
transport: local -> the recipient's guid; relay -> "host[:port]" (a domain route or smart
host); mx -> the recipient domain; site -> the remote site's directory name; replication, reject
-> "".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Route", "Transport"]


class Transport(StrEnum):
    LOCAL = "local"
    RELAY = "relay"
    MX = "mx"
    SITE = "site"
    REPLICATION = "replication"  # this site's directory-service mailbox
    REJECT = "reject"  # a permanent failure decided by routing (unknown user, loop to self)
    DEFER = "defer"  # no route now (e.g. a remote site with no connected-site route yet)


@dataclass(frozen=True, slots=True)
class Route:
    transport: Transport
    nexthop: str
    recipient: str
    # For REJECT/DEFER: the status to report, e.g. ("5.1.1", "unknown user").
    status: str = ""
    reason: str = ""
