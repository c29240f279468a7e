"""The per-recipient routing decision of DESIGN.md section 2, as one function with a typed answer.

One job: `Router.route(address, trace) -> Route`, and `Router.explain` for the same decision
told step by step. Order:
0. `sitemail-dsa@<this site's routing domain>` -> `replication` (the directory-service
   mailbox); the DSA address of any other domain is routed like any remote address below,
   skipping rules 2 and 3 (other sites' routing domains are ours too, but their DSA is
   elsewhere);
1. the address is a proxy of a recipient in the (replicated) directory: its home site is this
   site -> `local`; another site -> `site` along the cheapest Connected Sites path (nexthop:
   the first hop); no path yet -> `defer` (stays queued, DSN at expiry); a first hop the
   message has already passed, when this site routed it before at the same directory
   version (its trace) -> `defer` 4.4.6: a true loop, the same decision again, held until
   this site's directory changes or for `loop_hold` (doubling per such pass) before it is
   sent again; any other first hop is a re-route and goes on;
2. not found, the domain is one of this site's internal-relay domains -> `relay` to its
   forward-unresolved host; another site's internal-relay domain -> `site` to that site;
3. not found, another accepted domain (authoritative) -> `reject` 5.1.1, unless the
   directory here may be behind (`Freshness`, from replication): at RCPT, while another
   site's changes are known to be missing, `defer` 4.4.3 (the SMTP policy answers 450, so
   no backscatter either way); for a queued message, `defer` 4.4.3 until every other site
   has been caught up with since the message arrived, or `unknown_window` has passed since;
   then `reject` 5.1.1 with a reason the DSN carries;
4. the domain matches an E-Mail Domain route -> `relay` to its host;
5. the domain is another site's routing address -> `site` to that site (when a path exists);
6. a smart host is configured -> `relay` to it;
7. otherwise -> `mx` (the SMTP policy lets only authenticated or trusted clients get here).
A next hop that turns out to be this server is refused by the remote transport with 5.4.6
(never delivered to itself). The routing table is cached for a few seconds: routing runs for
every recipient and must not cost more than the one indexed directory probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, TypeVar

from sitemail.core.address import DSA_LOCAL_PART, parse_address
from sitemail.core.errors import InvalidAddressError
from sitemail.directory import AddressOwner, Directory
from sitemail.routing.domain_routes import DomainRoute
from sitemail.routing.route import Route, Rule, SiteHop, Transport
from sitemail.routing.table import RoutingTable, load_table
from sitemail.routing.trace import Trace as PassedSites

__all__ = ["Explanation", "Freshness", "Router"]

T = TypeVar("T")
_CACHE_SECONDS = 2.0
# A recipient's home site comes from the directory, read live, and its path from the cached
# table: a site the directory knows but the table does not is looked up again in a table at
# most this old, so mail that arrives just after replication brought the site (and its
# Connected Sites) is not deferred for a retry interval. Bounded, so a burst of mail for a
# site that really has no path rebuilds the table at most a few times a second.
_RECHECK_SECONDS = 0.2
Trace = Mapping[str, float]  # site -> when the message left it (routing.trace)
_NO_TRACE: Trace = MappingProxyType({})


class _Cached(Generic[T]):
    """A value recomputed at most every few seconds (directory edits show up quickly)."""

    def __init__(self, compute: Callable[[], T], ttl: float = _CACHE_SECONDS) -> None:
        self._compute = compute
        self._ttl = ttl
        self._value: T | None = None
        self._at = float("-inf")

    def get(self, max_age: float | None = None) -> T:
        """The value, recomputed if older than the ttl (or `max_age`, when shorter)."""
        now = time.monotonic()
        ttl = self._ttl if max_age is None else min(self._ttl, max_age)
        if self._value is None or now - self._at > ttl:
            self._value = self._compute()
            self._at = now
        return self._value

    def invalidate(self) -> None:
        self._value = None


@dataclass(frozen=True, slots=True)
class Freshness:
    """How current this site's copy of the other sites' directories is (from replication's
    bookkeeping; site.py injects it): `caught_up[site]`: our copy holds everything that site
    had at that time (this server's clock); `behind`: sites whose changes are known to be
    missing here (an exchange in progress, a backlog, never received)."""

    caught_up: Mapping[str, float] = field(default_factory=dict)
    behind: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Explanation:
    route: Route
    steps: tuple[str, ...]


class _Notes:
    """Where the decision writes its reasons when asked to explain (else nowhere)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.lines: list[str] = []

    def __call__(self, text: str) -> None:
        if self.enabled:
            self.lines.append(text)


class Router:
    """Routes recipients for one site's IMS."""

    def __init__(
        self,
        directory: Directory,
        *,
        smart_host: str = "",
        freshness: Callable[[], Freshness] | None = None,
        unknown_window: float = 4 * 3600.0,
        loop_hold: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`freshness`: None means the directory here is taken as complete (a single site, or
        the golden tests): unknown users of authoritative domains are refused at once."""
        self._directory = directory
        self._local_site = directory.local_site
        self._table = _Cached(lambda: load_table(directory, smart_host=smart_host))
        self._freshness = freshness
        self._unknown_window = unknown_window
        self._loop_hold = loop_hold
        self._clock = clock

    def table(self) -> RoutingTable:
        return self._table.get()

    def invalidate(self) -> None:
        """Forget the cached table (after an admin change in this process)."""
        self._table.invalidate()

    def is_local_dsa(self, local_part: str, domain: str) -> bool:
        """Whether this is our directory-service mailbox (replication mail for this site)."""
        return local_part.lower() == DSA_LOCAL_PART and domain.lower() == self.table().dsa_domain

    def directory_version(self) -> int:
        """The version a site route records in the trace (`Directory.version`)."""
        return self._directory.version()

    def is_sibling(self, peer_ip: str) -> bool:
        """Whether `peer_ip` is an address a server of another site listens on (looked up
        again in a table at most 0.2 s old before saying no: replication may just have
        brought the site)."""
        if peer_ip in self.table().sibling_hosts:
            return True
        return peer_ip in self._table.get(max_age=_RECHECK_SECONDS).sibling_hosts

    def is_authoritative(self, domain: str) -> bool:
        return domain.lower() in self.table().accepted

    def domain_route(self, domain: str) -> DomainRoute | None:
        return self.table().domain_route(domain)

    def site_hop(self, site: str) -> SiteHop | None:
        """How to reach `site` when it is a first hop (a direct Connected Sites entry)."""
        path = self.table().sites.get(site)
        if path is None or len(path.path) != 2:
            return None
        route = self.domain_route(path.routing_address)
        pins = frozenset({path.tls_fingerprint}) if path.tls_fingerprint else frozenset()
        return SiteHop(site, path.routing_address, route.nexthop if route else None, pins)

    def route(self, address: str, trace: Trace = _NO_TRACE) -> Route:
        """Where `address` goes next; `trace` names the sites the message has passed."""
        return self._decide(address, trace, _Notes(False))

    def explain(self, address: str, trace: Trace = _NO_TRACE) -> Explanation:
        notes = _Notes(True)
        route = self._decide(address, trace, notes)
        return Explanation(route, tuple(notes.lines))

    # -- the decision -----------------------------------------------------------------------

    def _decide(self, address: str, trace: Trace, note: _Notes) -> Route:
        owner = self._directory.lookup(address)
        if owner is not None:
            return self._to_owner(address, owner, trace, note)
        note(f"1. directory: no recipient of the organisation has the address {address}")
        try:
            parsed = parse_address(address)
        except InvalidAddressError as exc:
            note(f"   the address is malformed: {exc.message}")
            return Route(Transport.REJECT, "", address, "5.1.3", exc.message, Rule.INVALID)
        domain, table = parsed.domain.lower(), self.table()
        if parsed.local.lower() == DSA_LOCAL_PART:
            if domain == table.dsa_domain:
                note(f"0. {address} is this site's directory-service mailbox")
                return Route(Transport.REPLICATION, "", address, rule=Rule.DSA)
            note("   a directory-service mailbox of another site: rules 2 and 3 do not apply")
        else:
            decided = self._accepted_domain(address, domain, table, trace, note)
            if decided is not None:
                return decided
        return self._outside(address, domain, table, trace, note)

    def _to_owner(self, address: str, owner: AddressOwner, trace: Trace, note: _Notes) -> Route:
        note(
            f"1. directory: {address} is a proxy address of {owner.kind} {owner.alias!r} "
            f"whose home site is {owner.site}"
        )
        if owner.site == self._local_site:
            note(f"   {owner.site} is this site: deliver locally")
            return Route(Transport.LOCAL, owner.guid, address, rule=Rule.DIRECTORY)
        return self._to_site(address, owner.site, trace, note, Rule.DIRECTORY)

    def _to_site(
        self,
        address: str,
        site: str,
        trace: Trace,
        note: _Notes,
        rule: Rule,
    ) -> Route:
        path = self.table().sites.get(site)
        if path is None:  # the directory knows the site; a table made before it may not
            path = self._table.get(max_age=_RECHECK_SECONDS).sites.get(site)
        if path is None:
            note(
                f"   no Connected Sites path from {self._local_site} to {site}: the message "
                f"waits in the queue (`sitemail connected-site add {site} --routing-address "
                "DOMAIN` adds one)"
            )
            return Route(
                Transport.DEFER,
                "",
                address,
                "4.4.0",
                f"no route to site {site} yet: add a connected site",
                rule,
                site,
            )
        hops = " > ".join(path.path)
        note(f"   cheapest path: {hops} (cost {path.cost}); first hop {path.first_hop}")
        version = self.directory_version()
        if path.first_hop in trace and self._true_loop(path.first_hop, trace, version, note):
            passed = ", ".join(sorted(trace))
            return Route(
                Transport.DEFER,
                "",
                address,
                "4.4.6",
                f"routing loop: {self._local_site} routed this message before with the same "
                f"directory (version {version}) and it came back (trace {passed}); "
                f"{self._local_site} thinks {address} lives at {site}, first hop "
                f"{path.first_hop}: the sites disagree until replication brings them together",
                rule,
                site,
            )
        return Route(Transport.SITE, path.first_hop, address, rule=rule, site=site, version=version)

    def _true_loop(self, hop: str, trace: Trace, version: int, note: _Notes) -> bool:
        """Whether sending to `hop`, a site the message already passed, repeats a decision.

        A re-route goes on: this site never routed the message (the site it came from may
        have had another view; if that site has not caught up, it holds the message when it
        comes back), or this site's directory changed since it did (its trace pass records
        the version). The same decision at the same version is a true loop: held, then sent
        again once it has waited `loop_hold` (doubling with each such pass), so a site that
        was behind gets the message again after it may have caught up, and nothing waits
        for the expiry while a path exists.
        """
        mine = trace.passes(self._local_site) if isinstance(trace, PassedSites) else []
        if not mine and self._local_site not in trace:
            note(
                f"   the message has passed {hop}, but never this site: a re-route (if {hop} "
                "has not caught up, it holds the message when it comes back)"
            )
            return False
        same = [p for p in mine if p.params.get("v") == str(version)]
        if not same and mine:
            note(
                f"   this site routed the message before at directory version "
                f"{mine[0].params.get('v', '?')}, now {version}: a re-route after a change"
            )
            return False
        arrived = trace.arrived if isinstance(trace, PassedSites) else None
        hold = self._loop_hold * 2 ** max(len(same) - 1, 0)
        if arrived is not None and self._clock() - arrived >= hold:
            note(
                f"   the same decision as before, held {hold:.0f} s: sent to {hop} again, in "
                "case it has caught up since"
            )
            return False
        passed = ", ".join(sorted(trace))
        note(
            f"   the message has already passed {hop} and this site (trace: {passed}) with the "
            f"same directory (version {version}): a true loop, held until the directories "
            f"change or for {hold:.0f} s"
        )
        return True

    def _accepted_domain(
        self,
        address: str,
        domain: str,
        table: RoutingTable,
        trace: Trace,
        note: _Notes,
    ) -> Route | None:
        host = table.internal_relay.get(domain)
        if host is not None:
            note(
                f"2. {domain} is an internal-relay domain of this site: recipients the "
                f"directory does not know are forwarded to {host}"
            )
            return Route(Transport.RELAY, host, address, rule=Rule.INTERNAL_RELAY)
        owner_site = table.relayed_by.get(domain)
        if owner_site is not None:
            note(f"2. {domain} is an internal-relay domain of {owner_site}: send it there")
            return self._to_site(address, owner_site, trace, note, Rule.INTERNAL_RELAY)
        if domain in table.accepted:
            note(f"3. {domain} is an authoritative domain of the organisation")
            return self._unknown(address, table, trace, note)
        note(f"2-3. {domain} is not a domain the organisation accepts")
        return None

    def _unknown(self, address: str, table: RoutingTable, trace: Trace, note: _Notes) -> Route:
        """No site has the address as far as this site knows: refuse it, unless another site
        may have it in changes that have not replicated here yet (docs/routing.md)."""
        table = self._table.get(max_age=_RECHECK_SECONDS)  # every site known: none missed
        others = set(table.sites) | set(table.unreachable)
        fresh = self._freshness() if self._freshness is not None and others else None
        arrived = trace.arrived if isinstance(trace, PassedSites) else None
        if fresh is None:
            note("   no such user")
            return _no_such_user(address, "no such user here")
        if arrived is None:  # at RCPT: tempfail while the user may have moved elsewhere...
            since = self._clock() - self._unknown_window
            removed_at = self._directory.released_since(address, since)
            if removed_at is not None:
                note(f"   removed at {removed_at} recently: it may have moved; try later")
                return _waiting(
                    address,
                    f"recently removed at {removed_at}; it may have moved to another site "
                    "whose change has not replicated here yet",
                )
            # ... or while another site's changes are known to be missing
            missing = fresh.behind | (others - set(fresh.caught_up))  # never caught up: behind
            behind = ", ".join(sorted(others & missing))
            if not behind:
                note("   replication from every site is current: no such user")
                return _no_such_user(address, "no such user here")
            note(f"   replication from {behind} is behind: the user may exist there; try later")
            return _waiting(address, f"directory replication from {behind} is behind")
        waiting = sorted(s for s in others if fresh.caught_up.get(s, float("-inf")) < arrived)
        if not waiting:
            note("   every site has been caught up with since the message arrived: no such user")
            return _no_such_user(
                address,
                "no such user: no site of the organisation has this address (the directory "
                "here has caught up with every site since the message arrived)",
            )
        names = ", ".join(waiting)
        if self._clock() - arrived >= self._unknown_window:
            note(f"   waited {self._unknown_window:.0f} s for replication from {names}: bounce")
            return _no_such_user(
                address,
                f"no such user: no site of the organisation had this address after "
                f"{self._unknown_window:.0f} s waiting for directory replication ({names} not "
                "caught up with since the message arrived)",
            )
        note(f"   not caught up with {names} since the message arrived: wait, never bounce yet")
        return _waiting(
            address,
            f"not in the directory here yet: waiting for directory replication from {names} "
            f"(at most {self._unknown_window:.0f} s after arrival)",
        )

    def _outside(
        self,
        address: str,
        domain: str,
        table: RoutingTable,
        trace: Trace,
        note: _Notes,
    ) -> Route:
        route = table.domain_route(domain)
        if route is not None:
            note(f"4. E-Mail Domain route {route.domain} -> forward to {route.nexthop}")
            return Route(Transport.RELAY, route.nexthop, address, rule=Rule.DOMAIN_ROUTE)
        site = table.site_domains.get(domain)
        if site is not None and site in table.sites:
            note(f"5. {domain} is the routing address of site {site}")
            return self._to_site(address, site, trace, note, Rule.SITE_DOMAIN)
        if table.smart_host:
            note(f"6. no domain route: the smart host {table.smart_host} takes it")
            return Route(Transport.RELAY, table.smart_host, address, rule=Rule.SMART_HOST)
        note(f"7. no domain route, no smart host: look up the MX records of {domain}")
        return Route(Transport.MX, domain, address, rule=Rule.MX)


def _no_such_user(address: str, reason: str) -> Route:
    return Route(Transport.REJECT, "", address, "5.1.1", reason, Rule.AUTHORITATIVE)


def _waiting(address: str, reason: str) -> Route:
    return Route(Transport.DEFER, "", address, "4.4.3", reason, Rule.AUTHORITATIVE)
