"""The replication commands of the `sitemail` CLI: connectors, Request Now, status, pending
partners, the KCC, and `directory list`.

One job: parse and render for `AdminService.replication`; registered on the main app by
`cli.py` (kept apart so neither file grows past reading size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sitemail.admin.cli import (
    DataDir,
    JsonFlag,
    _when,
    admin,
    app,
    directory_app,
    emit_json,
    handle_errors,
    out,
)
from sitemail.admin.datadir import resolve_data_dir
from sitemail.admin.replication import PeerStatus
from sitemail.admin.wake import poke
from sitemail.core.errors import UsageError
from sitemail.replication.connectors import DEFAULT_SCHEDULE, Connector
from sitemail.replication.keys import shown_fingerprint

__all__ = ["replication_app"]

replication_app = typer.Typer(
    help="Directory replication between sites, by mail.", no_args_is_help=True
)
connector_app = typer.Typer(
    help="Directory Replication Connectors: the sites this site pulls from.", no_args_is_help=True
)
pending_app = typer.Typer(
    help="Pending partners: sites asking to replicate that have no connector here.",
    no_args_is_help=True,
)
kcc_app = typer.Typer(help="The Knowledge Consistency Check.", no_args_is_help=True)
app.add_typer(replication_app, name="replication")
replication_app.add_typer(connector_app, name="connector")
replication_app.add_typer(pending_app, name="pending")
app.add_typer(kcc_app, name="kcc")

SiteArg = Annotated[str, typer.Argument(help="The remote site's directory name, e.g. SiteB.")]
Schedule = Annotated[
    str,
    typer.Option(
        "--schedule",
        help="never, always (every 15 minutes) or minutes between requests; every connector "
        "also requests once, [replication] startup_delay after the server starts.",
    ),
]


def _time(epoch: float | None) -> str:
    return _when(epoch) if epoch is not None else "-"


def _connector_json(c: Connector) -> dict[str, Any]:
    return {
        "site": c.site,
        "bridgehead": c.bridgehead,
        "routing_address": c.routing_address,
        "peer_key": c.peer_key,
        "fingerprint": c.fingerprint,
        "schedule": c.schedule,
    }


def _nudge(data_dir: Path | None) -> None:
    """Tell a running server to send what was just queued (best effort)."""
    poke(resolve_data_dir(data_dir))


@connector_app.command("add")
@handle_errors
def connector_add(  # noqa: PLR0917 - Typer maps each parameter to an option
    site: SiteArg,
    bridgehead: Annotated[str, typer.Option(help="The remote site's server that answers.")],
    routing_address: Annotated[
        str, typer.Option(help="Domain of the remote directory-service mailbox.")
    ],
    peer_key: Annotated[
        str, typer.Option(help="The remote site's key (first line of `sitemail site key` there).")
    ],
    schedule: Schedule = DEFAULT_SCHEDULE,
    data_dir: DataDir = None,
) -> None:
    """Replicate from SITE: pin its key and pull its directory on a schedule."""
    with admin(data_dir) as service:
        c = service.replication.add_connector(
            site,
            bridgehead=bridgehead,
            routing_address=routing_address,
            peer_key=peer_key,
            schedule=schedule,
        )
    out.print(
        f"connector to {c.site} added: bridgehead {c.bridgehead}, routing address "
        f"{c.routing_address}, key {c.fingerprint}, schedule {c.schedule}",
        markup=False,
    )
    _nudge(data_dir)


@connector_app.command("list")
@handle_errors
def connector_list(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """List this site's replication connectors."""
    with admin(data_dir) as service:
        connectors = service.replication.list_connectors()
        site = service.org().local_site
    if as_json:
        emit_json([_connector_json(c) for c in connectors])
        return
    for c in connectors:
        out.print(
            f"{c.site:16} {c.bridgehead:16} {c.routing_address:28} {c.schedule:8} {c.fingerprint}",
            markup=False,
        )
    out.print(f"{len(connectors)} connector(s) of {site}")


@connector_app.command("set")
@handle_errors
def connector_set(
    site: SiteArg,
    bridgehead: Annotated[str | None, typer.Option(help="A new bridgehead server.")] = None,
    routing_address: Annotated[str | None, typer.Option(help="A new routing address.")] = None,
    schedule: Annotated[
        str | None, typer.Option(help="A new schedule: never, always or minutes.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Change the connector to SITE (what is not given stays; a new key: remove, then add)."""
    if bridgehead is None and routing_address is None and schedule is None:
        raise UsageError("nothing to change: give --bridgehead, --routing-address or --schedule")
    with admin(data_dir) as service:
        c = service.replication.update_connector(
            site, bridgehead=bridgehead, routing_address=routing_address, schedule=schedule
        )
    out.print(
        f"connector to {c.site} changed: bridgehead {c.bridgehead}, routing address "
        f"{c.routing_address}, schedule {c.schedule}",
        markup=False,
    )
    _nudge(data_dir)


@connector_app.command("remove")
@handle_errors
def connector_remove(site: SiteArg, data_dir: DataDir = None) -> None:
    """Stop replicating with SITE (its replicas stay until their tombstones come)."""
    with admin(data_dir) as service:
        c = service.replication.remove_connector(site)
    out.print(f"connector to {c.site} removed", markup=False)


@replication_app.command("request-now")
@handle_errors
def request_now(
    site: SiteArg,
    refresh_all: Annotated[
        bool, typer.Option("--refresh-all", help="Pull everything from USN 0, not only changes.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Pull new and modified items from SITE now (Exchange's Request Now)."""
    with admin(data_dir) as service:
        outcome = service.replication.request_now(site, refresh_all=refresh_all)
    out.print(f"{outcome.peer}: {outcome.detail}", markup=False)
    if outcome.sent:
        _nudge(data_dir)


def _peer_json(p: PeerStatus) -> dict[str, Any]:
    return {
        "peer": p.peer,
        "connector": p.connector,
        "waiting": p.waiting,
        "outstanding_seq": p.outstanding_seq,
        "outstanding_at": p.outstanding_at,
        "last_request_at": p.last_request_at,
        "last_answer_at": p.last_answer_at,
        "last_complete_at": p.last_complete_at,
        "last_served_at": p.last_served_at,
        "lag_seconds": p.lag,
        "requests_sent": p.requests_sent,
        "answers_received": p.answers_received,
        "requests_served": p.requests_served,
        "objects_applied": p.objects_applied,
        "naming_contexts": [
            {
                "nc": link.nc,
                "watermark": link.watermark,
                "peer_watermark": link.peer_watermark,
                "peer_high": link.peer_high,
                "backlog": link.backlog,
                "objects_applied": link.objects_applied,
                "last_answer_at": link.last_answer_at,
            }
            for link in p.links
        ],
    }


@replication_app.command("status")
@handle_errors
def status(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Per peer and naming context: watermarks, last request and answer, lag, backlog."""
    with admin(data_dir) as service:
        report = service.replication.status()
    pending = [
        {"site": p.origin, "state": p.state, "requests": p.requests, "last_seen": p.last_seen}
        for p in report.pending
    ]
    if as_json:
        emit_json(
            {
                "site": report.site,
                "watermarks": report.watermarks,
                "peers": [_peer_json(p) for p in report.peers],
                "pending_partners": pending,
                "rejected": report.rejected,
            }
        )
        return
    out.print(f"site {report.site}", markup=False)
    if report.peers:
        out.print(
            "per naming context: ours = USN we hold of it, theirs = USN the peer said it holds "
            "(in its last request), their high = highest USN the peer has, backlog = their "
            "high - ours, received = objects received from the peer; lag = time since the "
            "last complete exchange",
            markup=False,
        )
    for p in report.peers:
        state = f"waiting for the answer to request #{p.outstanding_seq}" if p.waiting else "idle"
        lag = f"{p.lag:.0f} s" if p.lag is not None else "never complete"
        kind = "connector" if p.connector else "no connector"
        out.print(
            f"peer {p.peer} ({kind}): {state}; last request {_time(p.last_request_at)}, "
            f"last answer {_time(p.last_answer_at)}, lag {lag}; requests sent "
            f"{p.requests_sent}, answers received {p.answers_received}, requests served "
            f"{p.requests_served}, objects changed here {p.objects_applied}",
            markup=False,
        )
        for link in p.links:
            ours = "-" if link.nc == report.site else str(link.watermark)
            theirs = "-" if link.peer_watermark is None else str(link.peer_watermark)
            high = "-" if link.peer_high is None else str(link.peer_high)
            out.print(
                f"    {link.nc:16} ours {ours:>8}  theirs {theirs:>8}  their high {high:>8}"
                f"  backlog {link.backlog:>6}  received {link.objects_applied}",
                markup=False,
            )
    for item in pending:
        out.print(
            f"pending partner {item['site']} ({item['state']}, {item['requests']} request(s))",
            markup=False,
        )
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(report.rejected.items())) or "none"
    out.print(f"rejected messages: {rejected}", markup=False)


@pending_app.command("list")
@handle_errors
def pending_list(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Sites whose requests are held because they have no connector here."""
    with admin(data_dir) as service:
        items = service.replication.pending()
    rows = [
        {
            "site": p.origin,
            "state": p.state,
            "requests": p.requests,
            "first_seen": _when(p.first_seen),
            "last_seen": _when(p.last_seen),
            "routing_address": p.routing_address,
            "bridgehead": p.bridgehead,
            "public_key": p.public_key,
            "fingerprint": shown_fingerprint(p.public_key),
            "key_verified": p.verified,
            "network": p.source,
        }
        for p in items
    ]
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        out.print(
            f"{r['site']:16} {r['state']:9} {r['requests']:>4} request(s)  last {r['last_seen']}  "
            f"{r['routing_address']}  from {r['network'] or '?'}  key {r['fingerprint']}"
            + ("" if r["key_verified"] else " (unverified: compare with `sitemail site key`)"),
            markup=False,
        )
    waiting = sum(r["state"] == "pending" for r in rows)
    out.print(f"{waiting} pending partner(s), {len(rows) - waiting} rejected")


@pending_app.command("accept")
@handle_errors
def pending_accept(
    site: SiteArg,
    schedule: Schedule = DEFAULT_SCHEDULE,
    fingerprint: Annotated[
        str,
        typer.Option(
            "--fingerprint",
            help="The key fingerprint SITE's admin read out (`sitemail site key` there): "
            "accept only if the held key has it.",
        ),
    ] = "",
    data_dir: DataDir = None,
) -> None:
    """Add a connector to SITE with the key its request carried, and answer that request."""
    with admin(data_dir) as service:
        c = service.replication.accept_pending(site, schedule=schedule, fingerprint=fingerprint)
    out.print(
        f"{c.site} accepted: connector added (key {c.fingerprint}); its request is answered",
        markup=False,
    )
    _nudge(data_dir)


@pending_app.command("reject")
@handle_errors
def pending_reject(site: SiteArg, data_dir: DataDir = None) -> None:
    """Keep ignoring SITE's requests (they stay held, unanswered)."""
    with admin(data_dir) as service:
        service.replication.reject_pending(site)
    out.print(f"{site} rejected: its requests are ignored", markup=False)


@kcc_app.command("check-now")
@handle_errors
def kcc_check_now(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Run the Knowledge Consistency Check: known sites, topology, and warnings with fixes."""
    with admin(data_dir) as service:
        report = service.replication.kcc()
    if as_json:
        emit_json(
            {
                "site": report.local_site,
                "sites": [
                    {
                        "name": s.name,
                        "display_name": s.display_name,
                        "servers": list(s.servers),
                        "routing_domain": s.routing_domain,
                        "key_fingerprint": s.key_fingerprint,
                        "local": s.is_local,
                    }
                    for s in report.sites
                ],
                "connectors": [_connector_json(c) | {"owner": c.owner} for c in report.connectors],
                "warnings": [
                    {"code": w.code, "message": w.message, "fix": w.fix} for w in report.warnings
                ],
            }
        )
        return
    out.print(f"sites known at {report.local_site}:", markup=False)
    for s in report.sites:
        mark = " (this site)" if s.is_local else ""
        out.print(
            f"  {s.name}{mark}: servers {', '.join(s.servers) or '-'}; routing address "
            f"{s.routing_domain or '-'}",
            markup=False,
        )
    out.print("replication topology:", markup=False)
    for c in report.connectors:
        out.print(f"  {c.owner} pulls from {c.site} (schedule {c.schedule})", markup=False)
    out.print(f"{len(report.warnings)} warning(s)", markup=False)
    for w in report.warnings:
        out.print(f"  warning [{w.code}] {w.message}\n    fix: {w.fix}", markup=False)


@directory_app.command("list")
@handle_errors
def directory_list(
    site: Annotated[
        str | None, typer.Option("--site", help="Only objects owned by this site.")
    ] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """List every object held here, own and replicated, with its owning site and USN."""
    with admin(data_dir) as service:
        objects = service.replication.objects(site)
    if as_json:
        emit_json(
            [
                {
                    "site": o.site,
                    "kind": str(o.kind),
                    "name": o.alias,
                    "display_name": o.display_name,
                    "guid": o.guid,
                    "usn": o.usn_changed,
                    "version": o.version,
                    "primary_smtp": o.primary_smtp,
                }
                for o in objects
            ]
        )
        return
    for o in objects:
        out.print(
            f"{o.site:12} {o.kind!s:22} {o.alias:24} usn {o.usn_changed:>7} v{o.version:<3} "
            f"{o.primary_smtp}",
            markup=False,
        )
    out.print(f"{len(objects)} object(s)")
