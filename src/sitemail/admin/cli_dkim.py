"""`sitemail dkim show|rotate|init`: this site's DKIM keys and the records to publish for them.

One job: parse and render for `mailauth.dkimkeys`; registered on the main app by `cli.py`.
A rotation is two steps, so no signature is ever made with a key DNS does not serve yet:
`dkim rotate` makes the next key set (publish its records), `dkim rotate --activate` signs
with it from then on (a running server notices at its next message: mailauth.signing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sitemail.admin.cli import DataDir, JsonFlag, admin, app, emit_json, handle_errors, out
from sitemail.admin.service import AdminService
from sitemail.mailauth.dkimkeys import (
    DkimKeyState,
    activate_next,
    dkim_public_records,
    generate_dkim_keys,
    load_state,
    rotate,
)

__all__ = ["dkim_app"]

dkim_app = typer.Typer(
    help="This site's DKIM signing keys (RSA-2048 and Ed25519) and their DNS records.",
    no_args_is_help=True,
)
app.add_typer(dkim_app, name="dkim")


def _domains(service: AdminService) -> list[str]:
    return sorted(service.directory.accepted_domains())


def _show(service: AdminService, state: DkimKeyState | None, as_json: bool) -> None:
    data_dir: Path = service.config.data_dir
    records = dkim_public_records(data_dir, _domains(service))
    if as_json:
        emit_json(
            {
                "active": state.active if state else None,
                "next": state.next if state else None,
                "previous": state.previous if state else None,
                "records": [
                    {"name": r.name, "type": "TXT", "value": r.txt, "selector": r.selector}
                    for r in records
                ],
            }
        )
        return
    if state is None:
        out.print("no DKIM keys in this data dir: make them with `sitemail dkim init`")
        return
    out.print(f"active   {state.active} (signs)", markup=False)
    if state.next:
        out.print(f"next     {state.next} (published, activate with `dkim rotate --activate`)")
    if state.previous:
        out.print(f"previous {state.previous} (published until the next activation)")
    out.print("records to publish:")
    for record in records:
        out.print(f"{record.name}. IN TXT {record.zone_text()}", markup=False)


@dkim_app.command("show")
@handle_errors
def dkim_show(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """The key sets (active, next, previous) and the TXT records to publish for them."""
    with admin(data_dir) as service:
        _show(service, load_state(service.config.data_dir), as_json)


@dkim_app.command("rotate")
@handle_errors
def dkim_rotate(
    activate: Annotated[
        bool, typer.Option("--activate", help="Sign with the next key set from now on.")
    ] = False,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Make the next key set to publish now; with --activate, start signing with it."""
    with admin(data_dir) as service:
        where = service.config.data_dir
        state = activate_next(where) if activate else rotate(where)
        _show(service, state, as_json)
        if not as_json and not activate:
            out.print(
                f"publish the {state.next} records, wait for their TTL, then run "
                "`sitemail dkim rotate --activate`"
            )


@dkim_app.command("init")
@handle_errors
def dkim_init(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Make this site's first keys (a data dir made before DKIM signing existed)."""
    with admin(data_dir) as service:
        state = generate_dkim_keys(service.config.data_dir, service.config.site)
        _show(service, state, as_json)
