"""The Knowledge Consistency Check: what the directory says the organisation looks like.

One job: derive, from the objects held here (own and replicated), the known sites and their
servers, the replication topology (every site's connectors, since connectors replicate), and
the warnings an admin must act on, each with how to fix it:
- a connector whose remote site has replicated here but has no connector back to this site,
  or a remote connector to this site with no connector from here (the article's one-sided
  configuration: replication silently stops);
- a connector naming no known site (display names are not directory names);
- the same proxy address held by objects of two sites (found only through replication), with
  the one owner every site chooses, and addresses a site moved aside because it lost;
- a domain route pointing back at this server (mail would loop);
- a Connected Sites entry naming no known site, a known site no Connected Sites path reaches
  (mail for its recipients waits in the queue), a routing address two sites claim;
- messages deferred because forwarding them would re-enter a site they already passed (two
  sites disagree about a recipient's home site until replication catches up);
- sites waiting as pending partners.
A site appears here only once its configuration has replicated (the article: "Check Now").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Text, cast, select

from sitemail.directory import RECIPIENT_KINDS, Directory, ObjectKind, list_domain_routes
from sitemail.directory.ims_objects import list_connected_sites
from sitemail.directory.objects import row_to_recipient
from sitemail.replication import state
from sitemail.replication.connectors import Connector, all_connectors
from sitemail.replication.keys import shown_fingerprint
from sitemail.routing.table import load_table
from sitemail.store.tables import dir_object, proxy_address, proxy_conflict, queue_rcpt

__all__ = ["KccReport", "KccWarning", "SiteInfo", "known_sites", "run_kcc"]


@dataclass(frozen=True, slots=True)
class KccWarning:
    code: str
    message: str
    fix: str


@dataclass(frozen=True, slots=True)
class SiteInfo:
    name: str
    display_name: str
    servers: tuple[str, ...]
    routing_domain: str
    key_fingerprint: str
    is_local: bool
    public_key: str = ""


@dataclass(slots=True)
class KccReport:
    local_site: str
    sites: list[SiteInfo] = field(default_factory=list)
    connectors: list[Connector] = field(default_factory=list)
    warnings: list[KccWarning] = field(default_factory=list)


def run_kcc(directory: Directory, *, local_hosts: Iterable[str] = ()) -> KccReport:
    local = directory.local_site
    report = KccReport(local)
    report.sites = known_sites(directory)
    report.connectors = all_connectors(directory)
    known = {s.name for s in report.sites}
    _check_connectors(directory, report, known)
    _check_duplicates(directory, report)
    _check_routes(directory, report, {h.lower() for h in local_hosts})
    _check_connected_sites(directory, report, known)
    _check_loop_deferrals(directory, report)
    _check_pending(directory, report)
    return report


def known_sites(directory: Directory) -> list[SiteInfo]:
    """Every site the directory holds (the local one and the replicated ones), with servers."""
    servers: dict[str, list[str]] = {}
    for server in directory.list_objects(ObjectKind.SERVER):
        servers.setdefault(server.site, []).append(server.alias)
    infos = []
    for site in directory.list_objects(ObjectKind.SITE):
        key = str(site.attrs.get("public_key", ""))
        infos.append(
            SiteInfo(
                name=site.alias,
                display_name=site.display_name,
                servers=tuple(sorted(servers.get(site.site, []))),
                routing_domain=str(site.attrs.get("routing_domain", "")),
                key_fingerprint=shown_fingerprint(key),
                is_local=site.site == directory.local_site,
                public_key=key,
            )
        )
    return infos


def _check_connectors(directory: Directory, report: KccReport, known: set[str]) -> None:
    local = report.local_site
    ours = {c.site: c for c in report.connectors if c.owner == local}
    towards_us = {c.owner: c for c in report.connectors if c.site == local and c.owner != local}
    by_display = {s.display_name: s.name for s in report.sites}
    by_lower = {s.name.lower(): s.name for s in report.sites}
    published = {s.name: s.public_key for s in report.sites}
    for name in sorted(ours):
        if name not in known:
            report.warnings.append(_unknown_site(name, by_display, by_lower))
            continue
        key = ours[name].peer_key
        if published.get(name) and published[name] != key:
            report.warnings.append(
                KccWarning(
                    "key-mismatch",
                    f"the connector to {name} pins key {shown_fingerprint(key)}, but {name} "
                    f"publishes {shown_fingerprint(published[name])}: its messages are refused",
                    f"sitemail replication connector remove {name}, then add it again with "
                    f"the first line of `sitemail site key` at {name}",
                )
            )
        if name not in towards_us:
            report.warnings.append(
                KccWarning(
                    "missing-reverse-connector",
                    f"{name} has no replication connector to {local}: it will hold our "
                    "requests as a pending partner and never pull from us",
                    f"on {name}: sitemail replication connector add {local} --bridgehead "
                    f"{directory.org().local_server} --routing-address "
                    f"{directory.routing_domain()} --peer-key <`sitemail site key` here>, or "
                    f"`sitemail replication pending accept {local}` there",
                )
            )
    for owner in sorted(set(towards_us) - set(ours)):
        report.warnings.append(
            KccWarning(
                "missing-reverse-connector",
                f"{owner} replicates from {local}, but {local} has no connector to {owner}",
                f"sitemail replication pending accept {owner}, or sitemail replication "
                f"connector add {owner} --bridgehead ... --routing-address ... --peer-key ...",
            )
        )


def _unknown_site(
    name: str,
    by_display: dict[str, str],
    by_lower: dict[str, str],
    what: str = "replication connector",
) -> KccWarning:
    if name.lower() in by_lower:
        hint = f" (directory names are case-sensitive: {by_lower[name.lower()]})"
        fix = f"remove it and add the {what} for {by_lower[name.lower()]}"
    elif name in by_display and by_display[name] != name:
        hint = f" ({name!r} is the display name of {by_display[name]})"
        fix = f"remove it and add the {what} for {by_display[name]}"
    else:
        hint = ""
        fix = (
            "use the remote site's directory name (`sitemail site show` there); until its "
            "configuration replicates here, the name cannot be checked"
        )
    return KccWarning("unknown-site", f"the {what} {name} names no site known here{hint}", fix)


def _check_duplicates(directory: Directory, report: KccReport) -> None:
    with directory.store.read() as conn:
        rows = conn.execute(
            select(
                proxy_conflict.c.address,
                dir_object.c.site,
                dir_object.c.name,
                proxy_address.c.guid,
            )
            .join(dir_object, dir_object.c.guid == proxy_conflict.c.guid)
            .join(
                proxy_address,
                proxy_address.c.address_key == proxy_conflict.c.address_key,
                isouter=True,
            )
            .order_by(proxy_conflict.c.address_key)
        ).all()
        holders = {
            r.guid: f"{r.site}/{r.name}"
            for r in conn.execute(
                select(dir_object.c.guid, dir_object.c.site, dir_object.c.name).where(
                    dir_object.c.guid.in_([r.guid for r in rows if r.guid])
                )
            )
        }
    for row in rows:
        winner = holders.get(row.guid, "nobody")
        report.warnings.append(
            KccWarning(
                "duplicate-address",
                f"{row.address} is claimed by {row.site}/{row.name} and by {winner}; "
                f"mail goes to {winner} (the older object) at every site",
                f"{row.site} moves its claim aside by itself at its next replication answer; "
                f"or remove the address from one of them at its home site "
                f"(sitemail mailbox set ... --remove-address {row.address})",
            )
        )
    _check_moved_aside(directory, report)


_MOVES_SHOWN = 30 * 86400.0  # a move aside is reported for this long after it happened


def _check_moved_aside(directory: Directory, report: KccReport) -> None:
    """Addresses a site gave up because another site's older object claimed them."""
    since = directory.clock.now() - _MOVES_SHOWN
    c = dir_object.c
    with directory.store.read() as conn:  # the few objects that ever moved, not all of them
        rows = conn.execute(
            select(dir_object).where(
                c.kind.in_([str(k) for k in RECIPIENT_KINDS]),
                c.is_deleted.is_(False),
                c.changed_at >= since,
                # CAST, not type_coerce: PostgreSQL has no LIKE on json
                cast(c.attrs, Text).contains('"moved_aside"', autoescape=True),
            )
        ).all()
    for obj in map(row_to_recipient, rows):
        for move in obj.attrs.get("moved_aside", []):
            at = move.get("at") if isinstance(move, dict) else None
            if not isinstance(at, int | float) or at < since:
                continue  # a replica's attrs are not trusted to be well formed
            report.warnings.append(
                KccWarning(
                    "address-moved-aside",
                    f"{obj.site}/{obj.alias} gave up {move.get('address')} (held by the "
                    f"older {move.get('held_by')}) and got {move.get('to')} instead",
                    f"tell the user of {obj.site}/{obj.alias} the new address; if the "
                    f"other object should have it, remove it there, then add it back "
                    f"at {obj.site}",
                )
            )


def _check_routes(directory: Directory, report: KccReport, local_hosts: set[str]) -> None:
    for route in list_domain_routes(directory):
        host = route.host.rsplit(":", 1)[0].strip("[]").lower() if route.host else ""
        if host in local_hosts:
            report.warnings.append(
                KccWarning(
                    "routing-loop",
                    f"the domain route for {route.domain} points at this server ({route.host})",
                    f"sitemail domain-route remove {route.domain}, then add it with the "
                    "host that really serves the domain",
                )
            )


def _check_connected_sites(directory: Directory, report: KccReport, known: set[str]) -> None:
    by_display = {s.display_name: s.name for s in report.sites}
    by_lower = {s.name.lower(): s.name for s in report.sites}
    for entry in list_connected_sites(directory):
        if entry.site not in known:
            report.warnings.append(
                _unknown_site(entry.site, by_display, by_lower, "connected site")
            )
    table = load_table(directory)
    for site in table.unreachable:
        report.warnings.append(
            KccWarning(
                "no-site-route",
                f"no Connected Sites path leads from {report.local_site} to {site}: mail for "
                f"its recipients waits in the queue and bounces at expiry",
                f"sitemail connected-site add {site} --routing-address <its routing address>, "
                "or one to a site that has a connected-site entry for it",
            )
        )
    for domain in table.ambiguous_domains:
        report.warnings.append(
            KccWarning(
                "ambiguous-routing-address",
                f"{domain} is the routing address of more than one site: it routes to neither",
                "give every site its own routing address (its site domain, e.g. "
                "siteb.example.com), not the shared domain",
            )
        )


def _check_loop_deferrals(directory: Directory, report: KccReport) -> None:
    """Recipients held back because forwarding would re-enter a site (routing.router)."""
    with directory.store.read() as conn:
        rows = conn.execute(
            select(queue_rcpt.c.queue_id, queue_rcpt.c.address, queue_rcpt.c.last_text)
            .where(
                queue_rcpt.c.state == "queued",
                queue_rcpt.c.last_status == "4.4.6",
                queue_rcpt.c.last_text.contains("routing loop:", autoescape=True),
            )
            .order_by(queue_rcpt.c.id)
            .limit(20)
        ).all()
    for row in rows:
        report.warnings.append(
            KccWarning(
                "site-loop-deferred",
                f"message {row.queue_id} to {row.address} is held: {row.last_text}",
                f"the sites disagree about where {row.address} lives: compare `sitemail route "
                f"explain {row.address}` here and at the sites in the trace, then `sitemail "
                "replication request-now <its home site>` at the one that is behind; the "
                "message goes on by itself once this site's directory changes, and is sent "
                "again after each hold in any case (it never waits for the expiry)",
            )
        )


def _check_pending(directory: Directory, report: KccReport) -> None:
    with directory.store.read() as conn:
        pending = state.list_pending(conn)
    for p in pending:
        if p.state != "pending":
            continue
        since = datetime.fromtimestamp(p.first_seen, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        plural = "request" if p.requests == 1 else "requests"
        check = (
            "its key is the one the directory holds for it; "
            if p.verified
            else f"compare key {shown_fingerprint(p.public_key)} with `sitemail site key` at "
            f"{p.origin}, then "
        )
        report.warnings.append(
            KccWarning(
                "pending-partner",
                f"{p.origin} asks to replicate ({p.requests} {plural} since {since}) but has "
                "no connector here",
                f"{check}sitemail replication pending accept {p.origin} (or reject)",
            )
        )
