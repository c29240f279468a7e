"""`sitemail doctor`: the article's prerequisites and the organisation's health, checked for real.

One job: from one site's data dir, check what the organisation needs to work, against the real
DNS (the name servers of this site's configuration) and the running servers, and say for each
finding ok / warning / error and how to fix it:
- dns: the MX (or A) of the company domain(s) and of every site's domain lead to an address
  where a server of the organisation (for a site domain: of that site) answers SMTP; which
  server answers is read from its greeting, so an MX pointing at the wrong site shows;
- records: every record `sitemail dns records` lists (MX, A, PTR, SPF, DKIM, DMARC) is
  published as it should be; each missing or wrong one with the line to publish;
- ims: each site's Internet Mail Service answers where this site sends that site's mail (its
  domain route, else its MX);
- connectors, connected-sites: both exist in both directions between every two sites, and
  name real sites (every site's entries replicate, so one site sees them all);
- replication: every peer answered, recently; no pending partners;
- duplicates, routing: the KCC's findings (duplicate proxy addresses, routes back to this
  server, routing addresses two sites claim, sites no path reaches, mail held for loops);
- files: this data dir is 0700 and its secrets (database, keys, admin token) 0600;
- tls: this server's certificate: expired or expiring within 30 days, or self-signed;
- round-trip: a signed ping to every site's directory-service mailbox comes back as a pong
  through the queues, the routing and SMTP both ways (like Exchange's Test-Mailflow).
Nothing here changes the directory; the pings are ordinary queued mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from sitemail.admin.dnscheck import check_records
from sitemail.admin.dnsrecords import compute_records
from sitemail.admin.filemodes import problems as mode_problems
from sitemail.admin.service import AdminService
from sitemail.admin.tls import describe
from sitemail.core.clock import span
from sitemail.core.errors import NotFoundError
from sitemail.directory.ims_objects import list_connected_sites
from sitemail.replication.connectors import all_connectors
from sitemail.replication.kcc import KccReport, SiteInfo
from sitemail.routing.resolver import DnsResolver, DnsRouteError, MailHosts, resolve_mail_hosts
from sitemail.routing.table import RoutingTable, load_table

__all__ = [
    "ROUND_TRIP_DEFAULT",
    "ROUND_TRIP_MAX",
    "ROUND_TRIP_MIN",
    "Finding",
    "Level",
    "run_doctor",
]

BANNER_TIMEOUT = 5.0
# Seconds to wait for each round trip: the default and the bounds the CLI, the API and the
# console accept.
ROUND_TRIP_DEFAULT = 30.0
ROUND_TRIP_MIN = 1.0
ROUND_TRIP_MAX = 600.0
CERT_RENEW_DAYS = 30  # a certificate this close to its end is a warning
STALE_AFTER = 2  # replication is stale after this many schedule intervals without an exchange
WAITING_TOO_LONG = 120.0  # an answer takes seconds: a request unanswered this long is stuck


class Level(StrEnum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Finding:
    check: str  # dns, ims, connectors, connected-sites, replication, duplicates, routing, ...
    level: Level
    message: str
    fix: str = ""


@dataclass(slots=True)
class _Doctor:
    service: AdminService
    report: KccReport
    scope: list[SiteInfo]  # the sites checked (all, or the one of --site)
    findings: list[Finding] = field(default_factory=list)
    down: set[str] = field(default_factory=set)  # sites whose IMS did not answer here

    def add(self, check: str, level: Level, message: str, fix: str = "") -> None:
        self.findings.append(Finding(check, level, message, fix))

    @property
    def local(self) -> str:
        return self.report.local_site

    def server_site(self, server: str) -> str | None:
        """The site of the server whose name starts a greeting's host name."""
        for site in self.report.sites:
            if server.lower() in (s.lower() for s in site.servers):
                return site.name
        return None


def run_doctor(
    service: AdminService,
    *,
    site: str | None = None,
    round_trip_timeout: float = ROUND_TRIP_DEFAULT,
    wake: Callable[[], object] = lambda: None,
) -> list[Finding]:
    """Every finding, in check order. `wake` nudges the running server to send the pings."""
    report = service.replication.kcc()
    names = [s.name for s in report.sites]
    if site is not None and site not in names:
        raise NotFoundError(f"no site {site!r} is known here (known: {', '.join(names)})")
    scope = [s for s in report.sites if site is None or s.name == site]
    doctor = _Doctor(service, report, scope)
    asyncio.run(_network_checks(doctor))
    _check_published_records(doctor, site)
    _check_connectors(doctor)
    _check_connected_sites(doctor)
    _check_replication(doctor)
    _check_kcc(doctor, site)
    _check_files(doctor)
    _check_certificate(doctor)
    _check_round_trips(doctor, round_trip_timeout, wake)
    return doctor.findings


# -- this data dir: file modes and the TLS certificate ------------------------------------------


def _check_files(doctor: _Doctor) -> None:
    found = mode_problems(doctor.service.config)
    for problem in found:
        doctor.add("files", Level.WARNING, problem.message, problem.fix)
    if not found:
        where = doctor.service.config.data_dir
        doctor.add("files", Level.OK, f"{where} and its secrets are readable by this user only")


def _check_certificate(doctor: _Doctor) -> None:
    try:
        info = describe(doctor.service.config)
    except NotFoundError as exc:
        doctor.add("tls", Level.ERROR, exc.message, "sitemail tls set --cert FILE --key FILE")
        return
    left = info.days_left(dt.datetime.now(dt.UTC))
    until = f"{info.not_after:%Y-%m-%d}"
    fix = "install a CA-issued certificate: sitemail tls set --cert FILE --key FILE"
    if left <= 0:
        doctor.add("tls", Level.ERROR, f"the TLS certificate expired on {until}", fix)
    elif left < CERT_RENEW_DAYS:
        doctor.add("tls", Level.WARNING, f"the TLS certificate expires on {until}", fix)
    elif info.self_signed:
        doctor.add(
            "tls",
            Level.WARNING,
            f"the TLS certificate is self-signed ({info.subject}, until {until}): mail clients "
            "and other mail servers cannot verify this server",
            fix,
        )
    else:
        doctor.add(
            "tls", Level.OK, f"TLS certificate of {info.subject} by {info.issuer}, until {until}"
        )


# -- DNS and the IMS --------------------------------------------------------------------------


def _resolver(service: AdminService) -> DnsResolver | None:
    servers = service.config.dns.servers()
    if not servers:
        return None
    timeout = service.config.dns.timeout
    return DnsResolver(servers, timeout=timeout, lifetime=timeout)


async def _network_checks(doctor: _Doctor) -> None:
    service = doctor.service
    resolver = _resolver(service)
    table = load_table(service.directory)
    port = service.config.smtp.outbound_port
    if resolver is None:
        doctor.add(
            "dns",
            Level.WARNING,
            "no DNS servers are configured here: MX and A records cannot be checked",
            "set [dns] nameservers in sitemail.toml (mail to the Internet needs them too)",
        )
    else:
        site_domains = {s.routing_domain for s in doctor.report.sites} | set(table.site_domains)
        company = sorted(table.accepted - site_domains)
        for domain in company if len(doctor.scope) == len(doctor.report.sites) else []:
            await _check_domain_dns(doctor, resolver, domain, None, port)
        for site in doctor.scope:
            if site.routing_domain:
                await _check_domain_dns(doctor, resolver, site.routing_domain, site.name, port)
    for site in doctor.scope:
        await _check_ims(doctor, site, resolver, table, port)


def _check_published_records(doctor: _Doctor, site: str | None) -> None:
    """The records of `sitemail dns records` against the configured name servers: each
    problem with the line to publish, the good ones counted in one line."""
    config = doctor.service.config
    servers = config.dns.servers()
    if not servers:
        return  # the dns check has said so already
    expected = compute_records(doctor.service.directory, config, site=site)
    verdicts = asyncio.run(check_records(expected.records, servers, config.dns.timeout))
    good = [v for v in verdicts if v.status == "ok"]
    for verdict in verdicts:
        if verdict.status != "ok":
            doctor.add("records", Level(verdict.status), verdict.message, verdict.fix)
    if good:
        kinds = ", ".join(dict.fromkeys(v.kind.upper() for v in good))
        doctor.add(
            "records",
            Level.OK,
            f"{len(good)} of {len(verdicts)} records published as "
            f"`sitemail dns records` lists them ({kinds})",
        )


async def _check_domain_dns(
    doctor: _Doctor, resolver: DnsResolver, domain: str, site: str | None, port: int
) -> None:
    """The domain's MX (or A) leads to a server of `site` (or of the organisation)."""
    whose = f"{site}'s domain {domain}" if site else f"the company domain {domain}"
    owner = site or "the organisation"
    record = f"{domain}. IN MX 10 <host>. and <host>. IN A <address of {owner}'s server>"
    try:
        hosts = await _mail_hosts(resolver, domain)
    except DnsRouteError as exc:
        servers = ", ".join(doctor.service.config.dns.nameservers)
        fix = (
            f"the name server ({servers}) did not answer: start it, or correct [dns] "
            "nameservers in sitemail.toml"
            if exc.temporary
            else f"publish {record}"
        )
        doctor.add("dns", Level.ERROR, f"{whose}: {exc}", fix)
        return
    answered = await _who_answers(doctor, hosts, port)
    shown = ", ".join(f"{h.name} {'/'.join(h.addresses)}" for h in hosts.hosts)
    kind = "A (no MX)" if hosts.implicit_mx else "MX"
    silent = [a for a in answered if a.greeting is None]
    right = [a for a in answered if a.site is not None and (site is None or a.site == site)]
    wrong = [a for a in answered if a.greeting is not None and a not in right]
    if wrong:
        level = Level.WARNING if right else Level.ERROR
        doctor.add(
            "dns",
            level,
            f"{whose}: {kind} {shown} leads to {_answers(wrong)}, not {owner}",
            f"point the records at {owner}'s server: {record}",
        )
    elif right:
        doctor.add("dns", Level.OK, f"{whose}: {kind} {shown} answers as {owner}")
    if silent and not wrong:
        doctor.add(
            "dns",
            Level.WARNING,
            f"{whose}: {kind} {shown}; nothing answers SMTP at {_answers(silent)}, so whose "
            "server it is cannot be told",
            "start the server there (the ims check says more), or correct the records",
        )


async def _mail_hosts(resolver: DnsResolver, domain: str) -> MailHosts:
    """Every MX host of `domain` with its addresses (the doctor checks them all, so the order
    among equal preferences does not matter; none is left out as "ourselves")."""
    return await resolve_mail_hosts(
        domain,
        resolver,
        local_names=frozenset(),
        local_addresses=frozenset(),
        rng=random.Random(0),  # noqa: S311 - the order only
    )


@dataclass(frozen=True, slots=True)
class _Answer:
    target: str  # address:port
    greeting: str | None  # the 220 line, None when nothing answers SMTP there
    why: str  # why there is no greeting
    site: str | None  # the site of the server that greets, if of the organisation


def _answers(answers: Iterable[_Answer]) -> str:
    return "; ".join(
        f"{a.target} ({a.why})"
        if a.greeting is None
        else f"{a.target} ({a.site or 'no server of the organisation: ' + a.greeting})"
        for a in answers
    )


async def _who_answers(doctor: _Doctor, hosts: MailHosts, port: int) -> list[_Answer]:
    """Who greets at every MX address: which of the organisation's servers, if any."""
    found = []
    for host in hosts.hosts:
        for address in host.addresses:
            greeting = await _greeting(address, port)
            target = f"{address}:{port}"
            if not greeting.startswith("220 "):
                found.append(_Answer(target, None, greeting, None))
                continue
            server = greeting.split()[1].split(".")[0]
            found.append(_Answer(target, greeting, "", doctor.server_site(server)))
    return found


async def _greeting(host: str, port: int) -> str:
    """The SMTP server's 220 line, or a description of why there is none."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), BANNER_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        return f"no answer ({_reason(exc)})"
    try:
        line = await asyncio.wait_for(reader.readline(), BANNER_TIMEOUT)
        with contextlib.suppress(OSError):
            writer.write(b"QUIT\r\n")
            await writer.drain()
        return line.decode("ascii", "replace").strip() or "no greeting"
    except (OSError, TimeoutError) as exc:
        return f"no greeting ({_reason(exc)})"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc)


async def _check_ims(
    doctor: _Doctor, site: SiteInfo, resolver: DnsResolver | None, table: RoutingTable, port: int
) -> None:
    """The site's IMS answers where this site sends its mail, as a server of that site."""
    where, how = await _ims_addresses(doctor, site, resolver, table, port)
    if not where:
        doctor.down.add(site.name)
        doctor.add(
            "ims",
            Level.ERROR,
            f"{doctor.local} has no way to reach {site.name}'s IMS ({how})",
            f"sitemail domain-route add {site.routing_domain} <{site.name}'s server address>, "
            f"or publish an MX for {site.routing_domain}",
        )
        return
    for host, target_port in where:
        target = f"{host}:{target_port}"
        greeting = await _greeting(host, target_port)
        if not greeting.startswith("220 "):
            doctor.down.add(site.name)
            doctor.add(
                "ims",
                Level.ERROR,
                f"{site.name}'s IMS at {target} ({how}) does not answer: {greeting}",
                f"start it at {site.name} (sitemail serve), or correct {how}",
            )
            continue
        server = greeting.split()[1]
        if doctor.server_site(server.split(".")[0]) != site.name:
            doctor.add(
                "ims",
                Level.ERROR,
                f"{target} ({how}) answers as {server}, which is not a server of {site.name}",
                f"correct {how}",
            )
        else:
            doctor.add("ims", Level.OK, f"{site.name}'s IMS answers at {target} as {server}")


async def _ims_addresses(
    doctor: _Doctor, site: SiteInfo, resolver: DnsResolver | None, table: RoutingTable, port: int
) -> tuple[list[tuple[str, int]], str]:
    """Where this site sends `site`'s mail, and how it knows: (addresses, explanation)."""
    config = doctor.service.config
    if site.is_local:
        return [(a, config.smtp.port) for a in config.listen], "its listen address"
    route = table.domain_route(site.routing_domain)
    if route is not None:
        how = f"the domain route for {site.routing_domain}"
        if _is_ip(route.host):
            return [(route.host, route.port or port)], how
        addresses = await _addresses(resolver, route.host)
        return [(a, route.port or port) for a in addresses], f"{how} ({route.host})"
    if resolver is None:
        return [], "no domain route, no DNS servers configured"
    try:
        hosts = await _mail_hosts(resolver, site.routing_domain)
    except DnsRouteError as exc:
        return [], f"no domain route; {exc}"
    found = [(a, port) for h in hosts.hosts for a in h.addresses]
    return found, f"the MX of {site.routing_domain}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


async def _addresses(resolver: DnsResolver | None, host: str) -> tuple[str, ...]:
    """A host name's addresses through the configured DNS only (never the machine's)."""
    if resolver is None:
        return ()
    try:
        return await resolver.addresses(host)
    except DnsRouteError:
        return ()


# -- what the directory says ------------------------------------------------------------------


def _pairs(doctor: _Doctor) -> Iterable[tuple[str, str]]:
    """Every (site, other site) with one of them in scope."""
    names = [s.name for s in doctor.report.sites]
    scoped = {s.name for s in doctor.scope}
    for a in names:
        for b in names:
            if a != b and (a in scoped or b in scoped):
                yield a, b


def _check_connectors(doctor: _Doctor) -> None:
    links = {(c.owner, c.site) for c in all_connectors(doctor.service.directory)}
    known = {s.name for s in doctor.report.sites}
    if len(known) == 1:
        doctor.add(
            "connectors",
            Level.WARNING,
            f"{doctor.local} knows no other site: no replication connector has brought one",
            "sitemail replication connector add SITE --bridgehead ... --routing-address ... "
            "--peer-key ... (see docs/walkthrough.md)",
        )
        return
    missing = [(a, b) for a, b in _pairs(doctor) if (a, b) not in links]
    for a, b in missing:
        other_way = f"{b} has one to {a}" if (b, a) in links else "nor the other way round"
        doctor.add(
            "connectors",
            Level.ERROR,
            f"{a} has no replication connector to {b} ({other_way})",
            f"on {a}: sitemail replication connector add {b} --bridgehead "
            f"{_server_of(doctor, b)} --routing-address {_domain_of(doctor, b)} "
            f"--peer-key <first line of `sitemail site key` at {b}>",
        )
    if not missing:
        doctor.add(
            "connectors",
            Level.OK,
            "replication connectors exist in both directions between " + ", ".join(sorted(known)),
        )


def _server_of(doctor: _Doctor, site: str) -> str:
    info = next(s for s in doctor.report.sites if s.name == site)
    return info.servers[0] if info.servers else f"<{site}'s server>"


def _domain_of(doctor: _Doctor, site: str) -> str:
    info = next(s for s in doctor.report.sites if s.name == site)
    return info.routing_domain or f"<{site}'s domain>"


def _check_connected_sites(doctor: _Doctor) -> None:
    entries = list_connected_sites(doctor.service.directory, "*")
    links = {(e.owner, e.site) for e in entries}
    missing = [(a, b) for a, b in _pairs(doctor) if (a, b) not in links]
    for a, b in missing:
        doctor.add(
            "connected-sites",
            Level.WARNING,
            f"{a} has no Connected Sites entry for {b}: its mail for {b} goes through other "
            "sites, or waits",
            f"on {a}: sitemail connected-site add {b} --routing-address {_domain_of(doctor, b)}",
        )
    if not missing and len(doctor.report.sites) > 1:
        doctor.add(
            "connected-sites", Level.OK, "every site has a Connected Sites entry for the others"
        )


def _check_replication(doctor: _Doctor) -> None:
    status = doctor.service.replication.status()
    connectors = {c.site: c for c in doctor.service.replication.list_connectors()}
    scoped = {s.name for s in doctor.scope}
    now = doctor.service.clock.now()
    for peer in status.peers:
        if peer.peer not in scoped and doctor.local not in scoped:
            continue
        connector = connectors.get(peer.peer)
        if connector is None:
            continue
        if peer.last_complete_at is None:
            waited = (
                f"request #{peer.outstanding_seq} unanswered" if peer.waiting else "never asked"
            )
            doctor.add(
                "replication",
                Level.ERROR,
                f"{doctor.local} has never had a complete answer from {peer.peer} ({waited})",
                f"check the connector back at {peer.peer}, then `sitemail replication "
                f"request-now {peer.peer}` here",
            )
            continue
        interval = connector.interval
        stale = interval is not None and peer.lag is not None and peer.lag > STALE_AFTER * interval
        late = peer.waiting and now - float(peer.outstanding_at or now) > WAITING_TOO_LONG
        if stale or late:
            doctor.add(
                "replication",
                Level.WARNING,
                f"replication from {peer.peer} is stale: last complete exchange "
                f"{span(peer.lag or 0)} ago"
                + (
                    f"; request #{peer.outstanding_seq} is unanswered since "
                    f"{span(now - float(peer.outstanding_at or now))}"
                    if late
                    else ""
                ),
                f"`sitemail doctor` at {peer.peer} says why (no connector back to "
                f"{doctor.local}?); then sitemail replication request-now {peer.peer}",
            )
        else:
            doctor.add(
                "replication",
                Level.OK,
                f"replication from {peer.peer}: last complete exchange {span(peer.lag or 0)} ago",
            )
    for held in status.pending:
        if held.state == "pending":
            doctor.add(
                "replication",
                Level.ERROR,
                f"{held.origin} asks to replicate with {doctor.local} but has no connector here",
                f"sitemail replication pending accept {held.origin} (after checking its key)",
            )


# The KCC's warnings the doctor reports as they are (the connector checks above cover the
# KCC's missing-reverse-connector and pending-partner, organisation-wide).
_KCC_CHECKS = {
    "duplicate-address": "duplicates",
    "routing-loop": "routing",
    "ambiguous-routing-address": "routing",
    "no-site-route": "routing",
    "site-loop-deferred": "routing",
    "unknown-site": "connectors",
    "key-mismatch": "connectors",
}


def _check_kcc(doctor: _Doctor, site: str | None) -> None:
    counted = dict.fromkeys(("duplicates", "routing"), 0)
    for warning in doctor.report.warnings:
        check = _KCC_CHECKS.get(warning.code)
        if check is None or (site is not None and site not in warning.message):
            continue
        doctor.add(check, Level.ERROR, warning.message, warning.fix)
        if check in counted:
            counted[check] += 1
    if not counted["duplicates"]:
        doctor.add("duplicates", Level.OK, "no proxy address is claimed twice")
    if not counted["routing"]:
        doctor.add("routing", Level.OK, "the routing table reaches every site, without loops")


# -- round trips ------------------------------------------------------------------------------


def _check_round_trips(doctor: _Doctor, timeout: float, wake: Callable[[], object]) -> None:
    replication = doctor.service.replication
    # A site whose IMS did not answer cannot answer a ping either: not waited for.
    for name in sorted(doctor.down):
        doctor.add(
            "round-trip",
            Level.ERROR,
            f"no ping sent to {name}: its IMS does not answer (see the ims finding)",
            f"start it at {name} (sitemail serve), then run the doctor again",
        )
    scope = [s for s in doctor.scope if s.name not in doctor.down]
    sent = {s.name: (replication.ping(s.name), time.monotonic()) for s in scope}
    wake()
    deadline = time.monotonic() + timeout
    answered: dict[str, float] = {}
    while len(answered) < len(sent) and time.monotonic() < deadline:
        for name, (token, started) in sent.items():
            if name not in answered and replication.pong_at(token) is not None:
                answered[name] = time.monotonic() - started
        if len(answered) < len(sent):
            time.sleep(0.2)
    for name in sent:
        if name in answered:
            doctor.add(
                "round-trip",
                Level.OK,
                f"a signed ping to {name}'s directory-service mailbox came back in "
                f"{answered[name]:.1f} s",
            )
        else:
            doctor.add(
                "round-trip",
                Level.ERROR,
                f"no answer from {name} within {timeout:.0f} s to a ping through the queue "
                "and SMTP",
                f"is this site's server running (sitemail serve)? `sitemail queue list` here "
                f"and at {name} shows where it waits",
            )
