"""`sitemail site remove SITE [--dry-run]`: take a site out of the organisation, here.

One job: parse and render for `AdminService.remove_site` (admin/siteremoval.py); registered
on the main app's `site` group by `cli.py`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sitemail.admin.cli import (
    DataDir,
    JsonFlag,
    admin,
    emit_json,
    err,
    handle_errors,
    out,
    site_app,
)
from sitemail.admin.siteremoval import RemovalReport

__all__ = ["site_remove"]


def _report_json(report: RemovalReport) -> dict[str, Any]:
    return {
        "site": report.site,
        "dry_run": report.dry_run,
        "connector": report.connector.site if report.connector else None,
        "connected_site": report.connected_site.site if report.connected_site else None,
        "domain_routes": [{"domain": r.domain, "host": r.host} for r in report.domain_routes],
        "replica_objects": report.replica_objects,
        "replica_addresses": report.replica_addresses,
        "queued": [
            {"queue_id": q.queue_id, "recipient": q.recipient, "sender": q.sender}
            for q in report.queued
        ],
        "still_named_by": list(report.elsewhere),
    }


def _print_report(report: RemovalReport) -> None:
    verb = "would remove" if report.dry_run else "removed"
    name = report.site
    if report.connector:
        out.print(f"{verb}: replication connector to {name} (its key)", markup=False)
    if report.connected_site:
        out.print(
            f"{verb}: connected site {name} via {report.connected_site.routing_address}",
            markup=False,
        )
    for route in report.domain_routes:
        out.print(f"{verb}: domain route {route.domain} -> {route.host}", markup=False)
    out.print(
        f"{verb}: {name}'s replica here ({report.replica_objects} object(s), "
        f"{report.replica_addresses} proxy address(es)) and its replication records",
        markup=False,
    )
    for q in report.queued:
        out.print(
            f"queued for {name}: {q.queue_id} to {q.recipient} from <{q.sender}>", markup=False
        )
    if report.queued:
        err.print(
            f"warning: {len(report.queued)} recipient(s) still queued for {name}: they bounce "
            "to their senders once [replication] unknown_recipient_window passes, unless "
            "deleted (`sitemail queue delete ID`)",
            markup=False,
        )
    for other in report.elsewhere:
        err.print(
            f"note: {other} still names {name}: run `sitemail site remove {name}` there too",
            markup=False,
        )
    if report.dry_run:
        out.print("dry run: nothing was changed")


@site_app.command("remove")
@handle_errors
def site_remove(
    site: Annotated[str, typer.Argument(help="The removed site's directory name, e.g. SiteB.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be removed; change nothing.")
    ] = False,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Remove SITE from the organisation at this (remaining) site: its connector and key,
    connected-site entry, domain routes and replica; report mail still queued for it. Run it
    at every remaining site."""
    with admin(data_dir) as service:
        report = service.remove_site(site, dry_run=dry_run)
    if as_json:
        emit_json(_report_json(report))
        return
    _print_report(report)
