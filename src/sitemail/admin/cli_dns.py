"""`sitemail dns records`: every DNS record to publish, as zone-file lines or JSON.

One job: parse and render for `admin.dnsrecords`; registered on the main app by `cli.py`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sitemail.admin.cli import DataDir, JsonFlag, admin, app, emit_json, handle_errors, out
from sitemail.admin.dnsrecords import (
    PublishedRecord,
    compute_records,
    publish_own_dkim,
)
from sitemail.core.errors import NotFoundError
from sitemail.directory import ObjectKind

__all__ = ["dns_app"]

dns_app = typer.Typer(
    help="The DNS records the organisation publishes (MX, A, PTR, SPF, DKIM, DMARC).",
    no_args_is_help=True,
)
app.add_typer(dns_app, name="dns")

_HEADINGS = {
    "mx": "MX: where the Internet delivers the organisation's mail",
    "a": "A/AAAA: each server's host name",
    "ptr": "PTR: ask whoever owns each address block (the reverse name gives the host back)",
    "spf": "SPF (RFC 7208): the addresses that send for each domain and host name",
    "dkim": "DKIM (RFC 6376): each site's public keys",
    "dmarc": "DMARC (RFC 7489): what receivers do with mail failing SPF and DKIM alignment",
}


@dns_app.command("records")
@handle_errors
def records(
    site: Annotated[
        str | None,
        typer.Option("--site", help="Only this site's records and the organisation's."),
    ] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Print every record an administrator must publish, ready to paste into a zone file."""
    with admin(data_dir) as service:
        known = [s.alias for s in service.directory.list_objects(ObjectKind.SITE)]
        if site is not None and site not in known:
            raise NotFoundError(f"no site {site!r} is known here (known: {', '.join(known)})")
        config = service.config
        publish_own_dkim(service.directory, config.data_dir)
        found = compute_records(service.directory, config, site=site)
    if as_json:
        emit_json({"records": [r.as_json() for r in found.records], "notes": list(found.notes)})
        return
    _show(found.records)
    for note in found.notes:
        out.print(f"; note: {note}", markup=False)


def _show(shown: tuple[PublishedRecord, ...]) -> None:
    for kind, heading in _HEADINGS.items():
        lines = [r.zone_line() for r in shown if r.kind == kind]
        if lines:
            out.print(f"; {heading}", markup=False)
            for line in lines:
                out.print(line, markup=False)
            out.print("")
