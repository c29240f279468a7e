"""The site-to-site routing commands of the `sitemail` CLI: `connected-site`, `domain`,
`routing table` and `route explain`.

One job: parse and render for `AdminService.routing`; registered on the main app by `cli.py`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sitemail.admin.cli import DataDir, JsonFlag, admin, app, emit_json, handle_errors, out
from sitemail.admin.routing import ExplainReport
from sitemail.core.errors import UsageError
from sitemail.directory.ims_objects import DEFAULT_COST, MAX_COST, ConnectedSite, DomainEntry
from sitemail.routing.table import RoutingTable

__all__ = ["connected_site_app", "domain_app", "route_explain_app", "routing_app"]

connected_site_app = typer.Typer(
    help="Connected Sites: the other sites this site sends their mail to by SMTP.",
    no_args_is_help=True,
)
domain_app = typer.Typer(
    help="Accepted domains: authoritative (the default) or internal relay.", no_args_is_help=True
)
routing_app = typer.Typer(help="The routing table of this site.", no_args_is_help=True)
route_explain_app = typer.Typer(help="Why a recipient goes where it goes.", no_args_is_help=True)
app.add_typer(connected_site_app, name="connected-site")
app.add_typer(domain_app, name="domain")
app.add_typer(routing_app, name="routing")
app.add_typer(route_explain_app, name="route")

EveryFlag = Annotated[
    bool, typer.Option("--all", help="Also the entries of other sites (replicated here).")
]


def _connected_json(entry: ConnectedSite) -> dict[str, Any]:
    return {
        "site": entry.site,
        "routing_address": entry.routing_address,
        "cost": entry.cost,
        "tls_fingerprint": entry.tls_fingerprint or None,
        "owner": entry.owner,
        "known": entry.known,
    }


@connected_site_app.command("add")
@handle_errors
def connected_site_add(
    site: Annotated[str, typer.Argument(help="The remote site's directory name, e.g. SiteB.")],
    routing_address: Annotated[
        str,
        typer.Option(
            "--routing-address",
            help="The domain mail for that site is sent to, e.g. SiteB.example.com "
            "(a leading @ is accepted).",
        ),
    ],
    cost: Annotated[
        int, typer.Option("--cost", help=f"1-{MAX_COST}; the cheapest path wins.")
    ] = DEFAULT_COST,
    tls_fingerprint: Annotated[
        str,
        typer.Option(
            "--tls-fingerprint",
            help="Pin the peer's certificate (SHA-256, `sitemail site show` there): delivery "
            "to it then requires STARTTLS with that certificate.",
        ),
    ] = "",
    data_dir: DataDir = None,
) -> None:
    """Send mail for SITE's recipients (and sites beyond it) to its routing address."""
    with admin(data_dir) as service:
        entry = service.routing.add_connected_site(site, routing_address, cost, tls_fingerprint)
    pin = ", TLS pinned" if entry.tls_fingerprint else ""
    out.print(
        f"connected site added: {entry.site} via {entry.routing_address} (cost {entry.cost}{pin})",
        markup=False,
    )
    if not entry.known:
        typer.echo(
            f"warning: no site named {entry.site} is known here yet; it is kept, and the KCC "
            "reports it until directory replication brings that site (check the directory "
            "name with `sitemail site show` there: display names do not work)",
            err=True,
        )


@connected_site_app.command("list")
@handle_errors
def connected_site_list(
    every: EveryFlag = False, data_dir: DataDir = None, as_json: JsonFlag = False
) -> None:
    """List this site's Connected Sites entries (--all: every site's)."""
    with admin(data_dir) as service:
        entries = service.routing.list_connected_sites(every)
    if as_json:
        emit_json([_connected_json(e) for e in entries])
        return
    for e in entries:
        flags = ("" if e.known else "  (unknown site)") + (
            "  TLS pinned" if e.tls_fingerprint else ""
        )
        owner = f"{e.owner} -> " if every else ""
        out.print(f"{owner}{e.site:16} {e.routing_address:32} cost {e.cost}{flags}", markup=False)
    out.print(f"{len(entries)} connected site(s)")


@connected_site_app.command("set")
@handle_errors
def connected_site_set(
    site: Annotated[str, typer.Argument(help="The site's directory name.")],
    routing_address: Annotated[
        str | None, typer.Option("--routing-address", help="A new routing address.")
    ] = None,
    cost: Annotated[int | None, typer.Option("--cost", help=f"A new cost, 1-{MAX_COST}.")] = None,
    tls_fingerprint: Annotated[
        str | None,
        typer.Option("--tls-fingerprint", help="A new certificate pin; '' removes the pin."),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Change this site's entry for SITE (what is not given stays)."""
    if routing_address is None and cost is None and tls_fingerprint is None:
        raise UsageError("nothing to change: give --routing-address, --cost or --tls-fingerprint")
    with admin(data_dir) as service:
        entry = service.routing.update_connected_site(
            site, routing_address=routing_address, cost=cost, tls_fingerprint=tls_fingerprint
        )
    pin = ", TLS pinned" if entry.tls_fingerprint else ""
    out.print(
        f"connected site changed: {entry.site} via {entry.routing_address} "
        f"(cost {entry.cost}{pin})",
        markup=False,
    )


@connected_site_app.command("remove")
@handle_errors
def connected_site_remove(
    site: Annotated[str, typer.Argument(help="The site's directory name.")],
    data_dir: DataDir = None,
) -> None:
    """Remove this site's entry for SITE."""
    with admin(data_dir) as service:
        entry = service.routing.remove_connected_site(site)
    out.print(f"connected site removed: {entry.site}", markup=False)


def _domain_json(entry: DomainEntry) -> dict[str, Any]:
    return {
        "domain": entry.domain,
        "type": entry.type,
        "forward_unresolved": entry.forward_unresolved or None,
        "owner": entry.owner,
    }


@domain_app.command("add")
@handle_errors
def domain_add(
    domain: Annotated[str, typer.Argument(help="The domain, e.g. example.com.")],
    internal_relay: Annotated[
        bool,
        typer.Option(
            "--internal-relay",
            help="Shared with another mail system: recipients not in the directory are "
            "forwarded (needs --forward-unresolved).",
        ),
    ] = False,
    forward_unresolved: Annotated[
        str,
        typer.Option(
            "--forward-unresolved", help="Host[:port] of the other system (internal relay)."
        ),
    ] = "",
    data_dir: DataDir = None,
) -> None:
    """Accept mail for DOMAIN: authoritative (unknown users refused) or internal relay."""
    with admin(data_dir) as service:
        entry = service.routing.add_domain(domain, internal_relay, forward_unresolved)
    what = (
        f"internal relay, unresolved recipients forwarded to {entry.forward_unresolved}"
        if entry.internal_relay
        else "authoritative"
    )
    out.print(f"domain added: {entry.domain} ({what})", markup=False)


@domain_app.command("list")
@handle_errors
def domain_list(
    every: EveryFlag = False, data_dir: DataDir = None, as_json: JsonFlag = False
) -> None:
    """List this site's accepted domains (--all: every site's)."""
    with admin(data_dir) as service:
        entries = service.routing.list_domains(every)
    if as_json:
        emit_json([_domain_json(e) for e in entries])
        return
    for e in entries:
        forward = f" -> {e.forward_unresolved}" if e.internal_relay else ""
        owner = f"{e.owner}: " if every else ""
        out.print(f"{owner}{e.domain:32} {e.type}{forward}", markup=False)
    out.print(f"{len(entries)} domain(s)")


@domain_app.command("remove")
@handle_errors
def domain_remove(domain: Annotated[str, typer.Argument()], data_dir: DataDir = None) -> None:
    """Stop accepting DOMAIN as one of this site's domains."""
    with admin(data_dir) as service:
        entry = service.routing.remove_domain(domain)
    out.print(f"domain removed: {entry.domain}", markup=False)


def _table_json(table: RoutingTable) -> dict[str, Any]:
    return {
        "site": table.local_site,
        "sites": [
            {
                "site": p.site,
                "path": list(p.path),
                "cost": p.cost,
                "first_hop": p.first_hop,
                "routing_address": p.routing_address,
                "tls_pinned": bool(p.tls_fingerprint),
            }
            for p in sorted(table.sites.values(), key=lambda p: p.site)
        ],
        "unreachable_sites": list(table.unreachable),
        "site_domains": dict(sorted(table.site_domains.items())),
        "ambiguous_site_domains": list(table.ambiguous_domains),
        "domain_routes": [{"domain": r.domain, "host": r.nexthop} for r in table.domain_routes],
        "internal_relay": dict(sorted(table.internal_relay.items())),
        "relayed_by_site": dict(sorted(table.relayed_by.items())),
        "accepted_domains": sorted(table.accepted),
        "smart_host": table.smart_host or None,
        "default": "mx",
    }


@routing_app.command("table")
@handle_errors
def routing_table(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Print the routing table: paths to other sites, domains, domain routes, the default."""
    with admin(data_dir) as service:
        table = service.routing.table()
    if as_json:
        emit_json(_table_json(table))
        return
    out.print(f"Routing table of {table.local_site}", markup=False)
    out.print("Sites:")
    for p in sorted(table.sites.values(), key=lambda p: p.site):
        pin = "  TLS pinned" if p.tls_fingerprint else ""
        out.print(
            f"  {p.site:16} cost {p.cost:<3} via {p.first_hop:16} "
            f"({p.routing_address})  path {' > '.join(p.path)}{pin}",
            markup=False,
        )
    for site in table.unreachable:
        out.print(f"  {site:16} no path: mail for it waits in the queue", markup=False)
    if not table.sites and not table.unreachable:
        out.print("  (no other site known)")
    out.print("Site routing addresses:")
    for domain, site in sorted(table.site_domains.items()):
        out.print(f"  {domain:32} -> site {site}", markup=False)
    out.print("Accepted domains:")
    for domain in sorted(table.accepted):
        if domain in table.internal_relay:
            kind = f"internal relay -> {table.internal_relay[domain]}"
        elif domain in table.relayed_by:
            kind = f"internal relay at {table.relayed_by[domain]}"
        else:
            kind = "authoritative"
        out.print(f"  {domain:32} {kind}", markup=False)
    out.print("Domain routes:")
    for r in table.domain_routes:
        out.print(f"  {r.domain:32} -> {r.nexthop}", markup=False)
    out.print(f"Smart host: {table.smart_host or 'none'}", markup=False)
    out.print("Everything else: MX lookup (relaying only for authenticated or trusted clients)")


def _explain_json(report: ExplainReport) -> dict[str, Any]:
    route = report.route
    hop = report.hop
    return {
        "address": report.address,
        "transport": str(route.transport),
        "nexthop": route.nexthop or None,
        "site": route.site or None,
        "rule": str(route.rule),
        "status": route.status or None,
        "reason": route.reason or None,
        "steps": list(report.steps),
        "smtp_policy": report.policy,
        "site_hop": None
        if hop is None
        else {
            "site": hop.site,
            "routing_address": hop.routing_address,
            "relay": hop.relay,
            "tls_pinned": bool(hop.pins),
        },
        "sender": report.sender_note or None,
    }


@route_explain_app.command("explain")
@handle_errors
def route_explain(
    address: Annotated[str, typer.Argument(help="The recipient address.")],
    sender: Annotated[
        str | None, typer.Option("--from", help="The envelope sender ('<>' for a DSN).")
    ] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Explain, step by step, where mail for ADDRESS goes from this site and why."""
    with admin(data_dir) as service:
        report = service.routing.explain(address, sender)
    if as_json:
        emit_json(_explain_json(report))
        return
    out.print(f"Route for {report.address} at this site:", markup=False)
    for step in report.steps:
        out.print(f"  {step}", markup=False)
    out.print(f"Decision: {_decision(report)}", markup=False)
    out.print(f"SMTP: {report.policy}", markup=False)
    if report.sender_note:
        out.print(f"Sender: {report.sender_note}", markup=False)


def _decision(report: ExplainReport) -> str:
    route, hop = report.route, report.hop
    match route.transport:
        case "local":
            return "deliver into the local mailbox store"
        case "replication":
            return "hand to the directory replication agent"
        case "site":
            how = (
                ""
                if hop is None
                else (
                    f"; {hop.routing_address} -> "
                    + (f"domain route to {hop.relay}" if hop.relay else "its MX records")
                    + (", STARTTLS with the pinned certificate required" if hop.pins else "")
                )
            )
            return f"send to site {route.nexthop} (home site {route.site}){how}"
        case "relay":
            return f"relay to {route.nexthop}"
        case "mx":
            return f"deliver to the MX hosts of {route.nexthop} (looked up at delivery)"
        case "defer":
            return f"keep queued ({route.status} {route.reason})"
        case _:
            return f"refuse ({route.status} {route.reason})"
