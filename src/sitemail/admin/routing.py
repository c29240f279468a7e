"""Administration of site-to-site routing: Connected Sites, accepted domains, the routing table,
and `route explain`.

One job: the operations behind `sitemail connected-site`, `sitemail domain`, `sitemail routing
table` and `sitemail route explain`, on one server's directory. The CLI (and later the HTTP
API) only parse and render.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sitemail.config import ServerConfig
from sitemail.core.address import parse_address
from sitemail.core.errors import InvalidAddressError, InvalidValueError, NotFoundError
from sitemail.directory import Directory
from sitemail.directory.ims_objects import (
    DEFAULT_COST,
    ConnectedSite,
    DomainEntry,
    add_connected_site,
    add_domain,
    list_connected_sites,
    list_domains,
    remove_connected_site,
    remove_domain,
    update_connected_site,
)
from sitemail.routing.domain_routes import parse_nexthop
from sitemail.routing.route import ACCEPTED_RULES, Route, SiteHop, Transport
from sitemail.routing.router import Router
from sitemail.routing.table import RoutingTable

__all__ = ["ExplainReport", "RoutingAdmin", "certificate_fingerprint"]


@dataclass(frozen=True, slots=True)
class ExplainReport:
    address: str
    route: Route
    steps: tuple[str, ...]
    policy: str  # what SMTP says at RCPT for an unauthenticated client from the Internet
    hop: SiteHop | None  # for site routes: how the first hop is reached
    sender_note: str  # what --from changes: who the sender is, where failures are reported


def certificate_fingerprint(config: ServerConfig) -> str:
    """SHA-256 of this server's TLS certificate (DER), the value peers pin."""
    path = Path(config.tls.cert_file)
    path = path if path.is_absolute() else config.data_dir / path
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise NotFoundError(f"cannot read the TLS certificate {path}: {exc}") from exc
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


class RoutingAdmin:
    def __init__(self, directory: Directory, config: ServerConfig) -> None:
        self.directory = directory
        self.config = config

    def router(self) -> Router:
        return Router(self.directory, smart_host=self.config.smtp.smart_host)

    # -- Connected Sites ------------------------------------------------------------------

    def add_connected_site(
        self,
        site: str,
        routing_address: str,
        cost: int = DEFAULT_COST,
        tls_fingerprint: str = "",
    ) -> ConnectedSite:
        return add_connected_site(
            self.directory,
            site,
            routing_address=routing_address,
            cost=cost,
            tls_fingerprint=tls_fingerprint,
        )

    def list_connected_sites(self, every_site: bool = False) -> list[ConnectedSite]:
        return list_connected_sites(self.directory, "*" if every_site else None)

    def update_connected_site(
        self,
        site: str,
        *,
        routing_address: str | None = None,
        cost: int | None = None,
        tls_fingerprint: str | None = None,
    ) -> ConnectedSite:
        return update_connected_site(
            self.directory,
            site,
            routing_address=routing_address,
            cost=cost,
            tls_fingerprint=tls_fingerprint,
        )

    def remove_connected_site(self, site: str) -> ConnectedSite:
        return remove_connected_site(self.directory, site)

    # -- domains ----------------------------------------------------------------------------

    def add_domain(
        self, domain: str, internal_relay: bool = False, forward_unresolved: str = ""
    ) -> DomainEntry:
        return add_domain(
            self.directory,
            domain,
            internal_relay=internal_relay,
            forward_unresolved=forward_unresolved,
        )

    def list_domains(self, every_site: bool = False) -> list[DomainEntry]:
        return list_domains(self.directory, "*" if every_site else None)

    def remove_domain(self, domain: str) -> DomainEntry:
        return remove_domain(self.directory, domain)

    # -- the table and one decision --------------------------------------------------------

    def table(self) -> RoutingTable:
        return self.router().table()

    def explain(self, address: str, sender: str | None = None) -> ExplainReport:
        address = address.strip()
        if not address:
            raise InvalidValueError("give a recipient address to explain")
        router = self.router()
        explanation = router.explain(address)
        route = explanation.route
        hop = router.site_hop(route.nexthop) if route.transport is Transport.SITE else None
        return ExplainReport(
            address,
            route,
            explanation.steps + self._loop_note(route),
            _policy(route),
            hop,
            self._sender_note(sender),
        )

    def _loop_note(self, route: Route) -> tuple[str, ...]:
        """A relay to one of this server's own addresses or names is refused at delivery
        (5.4.6, never a loop): say so here rather than show it as a normal relay."""
        if route.transport is not Transport.RELAY:
            return ()
        host = parse_nexthop(route.nexthop)[0].strip("[]").lower()
        ours = {a.lower() for a in self.config.listen}
        ours.add(f"{self.config.server.lower()}.{self.directory.routing_domain()}")
        if host not in ours:
            return ()
        return (
            f"   {host} is this server: the message would bounce with 5.4.6 (mail would loop "
            "to myself); point the domain route at the host that serves the domain",
        )

    def _sender_note(self, sender: str | None) -> str:
        if sender is None:
            return ""
        if sender.strip() in ("", "<>"):
            return "the null sender (a DSN): a failure is never reported back"
        try:
            parse_address(sender)
        except InvalidAddressError as exc:
            raise InvalidValueError(f"bad sender address {sender!r}: {exc.message}") from exc
        owner = self.directory.lookup(sender)
        if owner is None:
            return (
                f"{sender} is not an address of the organisation: from the Internet it may "
                "send only to what SMTP accepts above; failures go back to it as DSNs"
            )
        return (
            f"{sender} belongs to {owner.kind} {owner.alias!r} of {owner.site}: sent by that "
            "user after logging in, any route is allowed; failures go back to it as DSNs"
        )


def _policy(route: Route) -> str:
    if route.rule in ACCEPTED_RULES:
        return "accepted at RCPT from any client (a recipient or domain of the organisation)"
    if route.transport is Transport.REJECT:
        return f"refused at RCPT: {route.status} {route.reason}"
    return (
        "relaying: accepted at RCPT only from authenticated or trusted clients; others get "
        "550 5.7.1"
    )
