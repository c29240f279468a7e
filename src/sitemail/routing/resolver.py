"""MX resolution for outbound delivery: a domain → the hosts to try, in order.

Its one job: answer "where does mail for this domain go?" as RFC 5321 §5.1 and RFC 7505
say, for the ``mx`` route: MX records by preference (random order among equals), the
implicit MX (the domain's own A/AAAA) when there is no MX, each host with its addresses.

Collaborators: a ``Resolver`` (the DNS seam, injected): ``DnsResolver`` asks the DNS
servers it is given (``dns.asyncresolver``, never the machine's own configuration);
tests and the lab point it at the embedded DNS server on loopback.

Invariants:
- Outcomes the DNS states are typed errors, all ``DnsRouteError`` with an SMTP code, an
  enhanced status code and whether to retry: NXDOMAIN → 5.1.2; null MX → 5.1.10;
  SERVFAIL, REFUSED, timeouts → 4.4.3 (temporary); no host with an address → 5.4.4;
  only ourselves left → 5.4.6.
- Never deliver to itself: an MX host that is one of ours (by name or by any address)
  is dropped together with every MX of equal or worse preference.
- Order is reproducible: the random order among equal preferences comes only from the
  injected ``random.Random``, applied to a name-sorted list.
- Host names are lowercase without a trailing dot; addresses IPv4 first, then IPv6.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import ClassVar, Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.rrset

__all__ = [
    "DnsResolver",
    "DnsRouteError",
    "DnsTemporaryError",
    "MailHost",
    "MailHosts",
    "MailLoopError",
    "MxRecord",
    "NoDnsResolver",
    "NoMailHostError",
    "NoSuchDomainError",
    "NullMxError",
    "Resolver",
    "resolve_mail_hosts",
]

# -- errors (to be re-parented onto core.errors' SitemailError tree) ---------------------


class DnsRouteError(Exception):
    """The DNS says mail for a domain cannot go anywhere, now or ever."""

    code: ClassVar[int]  # SMTP basic reply code, 4xx or 5xx
    enhanced: ClassVar[str]  # RFC 3463 enhanced status code
    temporary: ClassVar[bool]  # True: retry later; False: bounce

    def __init__(self, domain: str, detail: str) -> None:
        super().__init__(f"{domain}: {detail}")
        self.domain = domain
        self.detail = detail


class NoSuchDomainError(DnsRouteError):
    """The domain does not exist (NXDOMAIN) or is not a valid DNS name."""

    code, enhanced, temporary = 550, "5.1.2", False


class NullMxError(DnsRouteError):
    """The domain publishes a null MX (``MX 0 .``, RFC 7505)."""

    code, enhanced, temporary = 556, "5.1.10", False


class NoMailHostError(DnsRouteError):
    """No MX host, nor the domain itself when it has no MX, has an address."""

    code, enhanced, temporary = 554, "5.4.4", False


class MailLoopError(DnsRouteError):
    """Every usable MX host is this server itself (RFC 5321 §5.1)."""

    code, enhanced, temporary = 554, "5.4.6", False


class DnsTemporaryError(DnsRouteError):
    """SERVFAIL, REFUSED or a timeout: try again later."""

    code, enhanced, temporary = 451, "4.4.3", True


# -- values ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MxRecord:
    """One MX record; ``exchange`` is ``"."`` for the null MX."""

    preference: int
    exchange: str  # lowercase, no trailing dot

    @property
    def is_null(self) -> bool:
        """Whether this is the null MX's target (the root name)."""
        return self.exchange == "."


@dataclass(frozen=True, slots=True)
class MailHost:
    """One host to try, with the addresses to connect to, in order."""

    name: str
    preference: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MailHosts:
    """Where mail for ``domain`` goes: ``hosts`` in the order to try them."""

    domain: str
    hosts: tuple[MailHost, ...]
    implicit_mx: bool  # True: the domain had no MX; ``hosts`` is the domain itself


# -- the DNS seam -------------------------------------------------------------------------


class Resolver(Protocol):
    """The DNS questions MX resolution asks; implementations raise DnsRouteError."""

    async def mx(self, domain: str) -> tuple[MxRecord, ...]:
        """The domain's MX records; ``()`` when it has none (no-data).

        Raises NoSuchDomainError (NXDOMAIN, bad name) or DnsTemporaryError.
        """
        ...

    async def addresses(self, host: str) -> tuple[str, ...]:
        """The host's IPv4 then IPv6 addresses; ``()`` when it has none.

        Raises NoSuchDomainError (NXDOMAIN, bad name) or DnsTemporaryError (only when no
        address at all was found).
        """
        ...


def _host_name(name: str) -> str:
    text = name.strip().lower()
    return "." if text in ("", ".") else text.rstrip(".")


class DnsResolver:
    """``Resolver`` over dnspython, asking only the given nameservers, without a cache."""

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]],
        *,
        timeout: float,
        lifetime: float,
        tcp: bool = False,
    ) -> None:
        """Ask ``nameservers`` ((address, port) pairs) in order.

        ``timeout`` bounds one query to one server, ``lifetime`` a whole lookup; ``tcp``
        sends every query over TCP.
        """
        if not nameservers:
            raise ValueError("DnsResolver needs at least one nameserver")
        resolver = dns.asyncresolver.Resolver(configure=False)  # never /etc/resolv.conf
        resolver.nameservers = [dns.nameserver.Do53Nameserver(a, p) for a, p in nameservers]
        resolver.timeout = timeout
        resolver.lifetime = lifetime
        resolver.cache = None
        self._resolver = resolver
        self._tcp = tcp

    async def _rrset(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset | None:
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise NoSuchDomainError(name, f"not a valid domain name ({exc})") from exc
        kind = dns.rdatatype.to_text(rdtype)
        try:
            answer = await self._resolver.resolve(
                qname, rdtype, tcp=self._tcp, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN as exc:
            raise NoSuchDomainError(name, "no such domain (NXDOMAIN)") from exc
        except dns.exception.Timeout as exc:
            raise DnsTemporaryError(name, f"DNS timeout looking up {kind}") from exc
        except dns.exception.DNSException as exc:  # NoNameservers: SERVFAIL, REFUSED, ...
            raise DnsTemporaryError(name, f"DNS failure looking up {kind}: {exc}") from exc
        return answer.rrset

    async def mx(self, domain: str) -> tuple[MxRecord, ...]:
        """The domain's MX records (see Resolver.mx)."""
        rrset = await self._rrset(domain, dns.rdatatype.MX)
        if rrset is None:
            return ()
        return tuple(
            MxRecord(int(rd.preference), _host_name(rd.exchange.to_text())) for rd in rrset
        )

    async def _addresses_of(self, host: str, rdtype: dns.rdatatype.RdataType) -> tuple[str, ...]:
        rrset = await self._rrset(host, rdtype)
        return () if rrset is None else tuple(str(rd.address) for rd in rrset)

    async def addresses(self, host: str) -> tuple[str, ...]:
        """The host's A then AAAA addresses (see Resolver.addresses)."""
        async with asyncio.TaskGroup() as group:
            v4 = group.create_task(_outcome(self._addresses_of(host, dns.rdatatype.A)))
            v6 = group.create_task(_outcome(self._addresses_of(host, dns.rdatatype.AAAA)))
        outcomes = (v4.result(), v6.result())
        for outcome in outcomes:
            if isinstance(outcome, NoSuchDomainError):
                raise outcome
        found = tuple(a for outcome in outcomes if isinstance(outcome, tuple) for a in outcome)
        for outcome in outcomes:
            if isinstance(outcome, DnsRouteError) and not found:
                raise outcome
        return found


async def _outcome(
    lookup: Awaitable[tuple[str, ...]],
) -> tuple[str, ...] | DnsRouteError:
    """Run one lookup, keeping its DNS error as a value (so siblings keep running)."""
    try:
        return await lookup
    except DnsRouteError as error:
        return error


# -- RFC 5321 §5.1 ----------------------------------------------------------------------


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _ordered(candidates: dict[str, int], rng: random.Random) -> list[tuple[int, str]]:
    """By preference; equal preferences in a random order drawn from ``rng``."""
    ordered: list[tuple[int, str]] = []
    by_preference = sorted((pref, name) for name, pref in candidates.items())
    for _, group in groupby(by_preference, key=lambda candidate: candidate[0]):
        peers = list(group)
        rng.shuffle(peers)
        ordered.extend(peers)
    return ordered


_IsSelf = Callable[[str, "tuple[str, ...] | DnsRouteError"], bool]


def _self_test(local_names: Iterable[str], local_addresses: Iterable[str]) -> _IsSelf:
    """A test for "is this host (name, address lookup) one of ours?"."""
    names = frozenset(_host_name(name) for name in local_names)
    addresses: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for text in local_addresses:
        address = _ip(text)
        if address is None:
            raise ValueError(f"local address {text!r} is not an IP address")
        addresses.add(address)

    def is_self(name: str, lookup: tuple[str, ...] | DnsRouteError) -> bool:
        if name in names:
            return True
        return isinstance(lookup, tuple) and any(_ip(a) in addresses for a in lookup)

    return is_self


async def resolve_mail_hosts(
    domain: str,
    resolver: Resolver,
    *,
    local_names: frozenset[str],
    local_addresses: frozenset[str],
    rng: random.Random,
) -> MailHosts:
    """The hosts to try for ``domain``, best first (RFC 5321 §5.1, RFC 7505).

    ``local_names`` and ``local_addresses`` say which hosts are this server; mail never
    goes to them, nor to MX hosts of equal or worse preference.
    ``domain`` is a DNS domain (an address literal such as ``[127.0.0.1]`` is the
    caller's business). Raises a DnsRouteError subclass when there is nowhere to go, and
    ValueError when a local address is not an IP address.
    """
    ours = _self_test(local_names, local_addresses)
    domain = _host_name(domain)
    if domain == ".":
        raise NoSuchDomainError(domain, "empty domain")
    records = await resolver.mx(domain)
    usable = [record for record in records if not record.is_null]
    if records and not usable:
        raise NullMxError(domain, "domain accepts no mail (null MX)")
    implicit = not usable
    candidates: dict[str, int] = {domain: 0} if implicit else {}
    for record in usable:
        candidates[record.exchange] = min(
            record.preference, candidates.get(record.exchange, record.preference)
        )
    ordered = _ordered(candidates, rng)

    async with asyncio.TaskGroup() as group:
        tasks = {name: group.create_task(_outcome(resolver.addresses(name))) for _, name in ordered}
    lookups = {name: task.result() for name, task in tasks.items()}

    self_preferences = [pref for pref, name in ordered if ours(name, lookups[name])]
    if self_preferences:
        cutoff = min(self_preferences)
        ordered = [(pref, name) for pref, name in ordered if pref < cutoff]
        if not ordered:
            raise MailLoopError(domain, "mail for domain loops back to myself")

    hosts = tuple(
        MailHost(name, pref, outcome)
        for pref, name in ordered
        if isinstance(outcome := lookups[name], tuple) and outcome
    )
    if hosts:
        return MailHosts(domain, hosts, implicit)
    for _, name in ordered:
        outcome = lookups[name]
        if isinstance(outcome, DnsRouteError) and outcome.temporary:
            raise DnsTemporaryError(domain, f"no address for mail host {name}: {outcome}")
    if implicit:
        raise NoMailHostError(domain, "domain has no MX and no address records")
    raise NoMailHostError(domain, "no MX host of the domain has an address")


class NoDnsResolver:
    """The resolver of a server configured without name servers ([dns] nameservers empty).

    Domain routes to IP addresses and a smart host given as an IP still work; anything that
    needs DNS is deferred with a message that says what to configure (never bounced: it is a
    configuration problem, not the recipient's).
    """

    async def mx(self, domain: str) -> tuple[MxRecord, ...]:
        raise DnsTemporaryError(domain, "no DNS servers configured ([dns] nameservers)")

    async def addresses(self, host: str) -> tuple[str, ...]:
        raise DnsTemporaryError(host, "no DNS servers configured ([dns] nameservers)")
