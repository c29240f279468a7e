"""The per-recipient routing decision of DESIGN.md section 2, as one function with a typed answer.

One job: `Router.route(address) -> Route`. Order:
0. `sitemail-dsa@<this site's routing domain>` -> `replication` (the directory-service
   mailbox); the DSA address of any other domain is routed like any remote address below,
   skipping rule 2 (other sites' routing domains are ours too, but their DSA is elsewhere);
1. the address is a proxy of a recipient in the (replicated) directory: its home site is this
   site -> `local` (nexthop: the recipient's guid); another site -> `site` (nexthop: that site);
2. not found, but the domain is one the organisation is authoritative for -> `reject` 5.1.1
   (the SMTP policy refuses such recipients at RCPT already, so no backscatter);
3. the domain matches an E-Mail Domain route -> `relay` to its host;
4. a smart host is configured -> `relay` to it;
5. otherwise -> `mx` (the SMTP policy lets only authenticated or trusted clients get here).
The directory and configuration are read through short-lived caches: routing runs for every
recipient of every message and must not cost a database round trip per domain question.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from sitemail.core.address import DSA_LOCAL_PART, parse_address
from sitemail.core.errors import InvalidAddressError
from sitemail.directory import Directory, list_domain_routes
from sitemail.routing.domain_routes import DomainRoute, match_domain_route, parse_nexthop
from sitemail.routing.route import Route, Transport

__all__ = ["Router"]

T = TypeVar("T")
_CACHE_SECONDS = 2.0


class _Cached(Generic[T]):
    """A value recomputed at most every few seconds (directory edits show up quickly)."""

    def __init__(self, compute: Callable[[], T], ttl: float = _CACHE_SECONDS) -> None:
        self._compute = compute
        self._ttl = ttl
        self._value: T | None = None
        self._at = float("-inf")

    def get(self) -> T:
        now = time.monotonic()
        if self._value is None or now - self._at > self._ttl:
            self._value = self._compute()
            self._at = now
        return self._value

    def invalidate(self) -> None:
        self._value = None


class Router:
    """Routes recipients for one site's IMS."""

    def __init__(self, directory: Directory, *, smart_host: str = "") -> None:
        self._directory = directory
        self._smart_host = smart_host
        self._local_site = directory.local_site
        self._domains = _Cached(directory.accepted_domains)
        self._routes = _Cached(self._load_routes)
        self._dsa_domain = _Cached(directory.routing_domain)

    def _load_routes(self) -> Sequence[DomainRoute]:
        routes = []
        for entry in list_domain_routes(self._directory):
            host, port = parse_nexthop(entry.host)
            routes.append(DomainRoute(entry.domain, host, port))
        return routes

    def invalidate(self) -> None:
        """Forget cached configuration (after an admin change in this process)."""
        self._domains.invalidate()
        self._routes.invalidate()
        self._dsa_domain.invalidate()

    def is_local_dsa(self, local_part: str, domain: str) -> bool:
        """Whether this is our directory-service mailbox (replication mail for this site)."""
        return local_part.lower() == DSA_LOCAL_PART and domain.lower() == self._dsa_domain.get()

    def is_authoritative(self, domain: str) -> bool:
        return domain.lower() in self._domains.get()

    def domain_route(self, domain: str) -> DomainRoute | None:
        return match_domain_route(self._routes.get(), domain)

    def route(self, address: str) -> Route:
        owner = self._directory.lookup(address)
        if owner is not None:
            if owner.site == self._local_site:
                return Route(Transport.LOCAL, owner.guid, address)
            return Route(Transport.SITE, owner.site, address)
        try:
            parsed = parse_address(address)
        except InvalidAddressError as exc:
            return Route(Transport.REJECT, "", address, "5.1.3", exc.message)
        domain = parsed.domain
        is_dsa = parsed.local.lower() == DSA_LOCAL_PART
        if is_dsa and self.is_local_dsa(parsed.local, domain):
            return Route(Transport.REPLICATION, "", address)
        if not is_dsa and self.is_authoritative(domain):
            return Route(Transport.REJECT, "", address, "5.1.1", "no such user here")
        route = self.domain_route(domain)
        if route is not None:
            nexthop = route.host if route.port is None else f"{route.host}:{route.port}"
            return Route(Transport.RELAY, nexthop, address)
        if self._smart_host:
            return Route(Transport.RELAY, self._smart_host, address)
        return Route(Transport.MX, domain, address)
