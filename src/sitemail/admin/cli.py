"""The `sitemail` command line (Typer + Rich): parse, call AdminService, render.

One job: turn arguments into AdminService calls and results into text or `--json`. Every
fault is a `SitemailError` printed as one `error:` line on stderr with its sysexits code;
an unexpected exception is reported as an internal error (exit 70), never as a traceback
(set SITEMAIL_DEBUG=1 to see one).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sitemail.admin.context import note_site
from sitemail.admin.datadir import read_pointer, remember_data_dir, resolve_data_dir
from sitemail.admin.privileges import ensure_user, give_back, hand_over
from sitemail.admin.routing import certificate_fingerprint
from sitemail.admin.service import AdminService, read_password_file
from sitemail.admin.wake import ask_attempts, poke
from sitemail.config import ServerConfig
from sitemail.core.clock import span
from sitemail.core.errors import NotFoundError, SitemailError
from sitemail.directory import (
    AddressingResult,
    Collision,
    ObjectKind,
    Recipient,
    RecipientChanges,
)
from sitemail.queue.admin import QueueEntry, RecipientEntry

__all__ = [
    "announce",
    "app",
    "cli_api",
    "cli_backup",
    "cli_context",
    "cli_dkim",
    "cli_dns",
    "cli_doctor",
    "cli_queue",
    "cli_replication",
    "cli_routing",
    "cli_server",
    "cli_service",
    "cli_site",
    "cli_tls",
    "cli_tracking",
    "main",
]

P = ParamSpec("P")
R = TypeVar("R")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    help="sitemail: one e-mail domain for an organisation spread over several sites.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
mailbox_app = typer.Typer(
    help="Mailboxes: recipients with a mailbox in this site.", no_args_is_help=True
)
contact_app = typer.Typer(
    help="Contacts: custom recipients forwarding to an external address.", no_args_is_help=True
)
group_app = typer.Typer(
    help="Groups: distribution lists expanded at delivery.", no_args_is_help=True
)
addressing_app = typer.Typer(
    help="Site Addressing: how this site's recipients are addressed.", no_args_is_help=True
)
directory_app = typer.Typer(help="The whole directory as JSON lines.", no_args_is_help=True)
app.add_typer(mailbox_app, name="mailbox")
app.add_typer(contact_app, name="contact")
app.add_typer(group_app, name="group")
app.add_typer(addressing_app, name="addressing")
app.add_typer(directory_app, name="directory")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", "-D", help="Server data dir (default: $SITEMAIL_DATA_DIR or the last `init`)."
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Report SitemailError as `error: ...` with its exit code; never show a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except SitemailError as exc:
            err.print(f"error: {exc.message}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            # `sitemail ... | head`: the reader left; stop quietly like any Unix tool.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:
            if os.environ.get("SITEMAIL_DEBUG"):
                raise
            err.print(
                f"internal error: {exc.__class__.__name__}: {exc} (SITEMAIL_DEBUG=1 shows more)",
                markup=False,
            )
            raise typer.Exit(70) from None

    return wrapper


def announce(config: ServerConfig) -> None:
    """On stderr: the site, server and data dir this command acts on (admin/context.py)."""
    line, warning = note_site(config)
    err.print(line, markup=False)
    if warning:
        err.print(warning, markup=False)


@contextmanager
def admin(data_dir: Path | None) -> Iterator[AdminService]:
    path = resolve_data_dir(data_dir)
    service = AdminService.open(path)
    announce(service.config)
    try:
        yield service
    finally:
        service.close()
        give_back(path)  # run as root: what it created goes to the server's user


def emit_json(value: Any) -> None:
    out.print_json(json.dumps(value, ensure_ascii=False, default=str))


# -- init -------------------------------------------------------------------------------------


@app.command()
@handle_errors
def init(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", "-D", help="Directory to create for this server.")
    ],
    org: Annotated[str, typer.Option(help="Organisation name, e.g. ExchangeORG.")],
    site: Annotated[str, typer.Option(help="This site's directory name, e.g. SiteA.")],
    server: Annotated[str, typer.Option(help="This server's name, e.g. ServerA.")],
    domain: Annotated[str, typer.Option(help="The site's e-mail domain, e.g. sitea.example.com.")],
    listen: Annotated[list[str], typer.Option(help="IP address to listen on (repeatable).")],
    database_url: Annotated[
        str, typer.Option(help="SQLAlchemy URL (default: SQLite in the data dir).")
    ] = "",
) -> None:
    """Create a server's data dir: configuration, database, organisation, site and server."""
    service = AdminService.init(
        data_dir.resolve(),
        org=org,
        site=site,
        server=server,
        domain=domain,
        listen=listen,
        database_url=database_url,
    )
    try:
        announce(service.config)
        if os.geteuid() == 0:  # the server's own user, which `serve` switches to
            user = ensure_user(service.config.user)
            hand_over(service.config.data_dir, user.pw_uid, user.pw_gid)
        info = service.org()
        out.print(
            f"initialised {data_dir}: organisation {info.name}, site {info.local_site}, "
            f"server {info.local_server}, addressing {service.addressing()}"
        )
        _init_default(service.config.data_dir)
    finally:
        service.close()


def _init_default(data_dir: Path) -> None:
    """The first data dir becomes the default; a later `init` leaves the default where it is
    and says so (creating a server never moves where the next command acts)."""
    current = read_pointer()
    if current is not None and current != data_dir and (current / "sitemail.toml").is_file():
        err.print(
            f"note: commands without --data-dir still act on {current}; "
            f"`sitemail use {data_dir}` makes this one the default",
            markup=False,
        )
    elif remember_data_dir(data_dir):
        err.print(f"commands without --data-dir now act on {data_dir}", markup=False)


# -- recipients -------------------------------------------------------------------------------


def recipient_json(service: AdminService, r: Recipient) -> dict[str, Any]:
    data: dict[str, Any] = {
        "alias": r.alias,
        "kind": str(r.kind),
        "site": r.site,
        "display_name": r.display_name,
        "primary_address": r.primary_smtp,
        "addresses": [p.address for p in r.proxies],
        "proxies": r.attrs.get("proxies", []),
        "guid": r.guid,
        "usn": r.usn_changed,
        "version": r.version,
        "read_only": r.site != service.directory.local_site,
    }
    for key in ("given_name", "surname", "initials", "target"):
        if key in r.attrs:
            data[key] = r.attrs[key]
    if r.kind is ObjectKind.GROUP:
        data["members"] = [m.alias for m in service.members(r)]
    return data


def print_recipients(service: AdminService, items: list[Recipient], as_json: bool) -> None:
    if as_json:
        emit_json([recipient_json(service, r) for r in items])
        return
    table = Table(box=None, pad_edge=False)
    for column in ("alias", "kind", "site", "display name", "primary address"):
        table.add_column(column)
    for r in items:
        table.add_row(r.alias, str(r.kind), r.site, r.display_name, r.primary_smtp)
    out.print(table)
    out.print(f"{len(items)} recipient(s)")


def print_recipient(service: AdminService, r: Recipient, as_json: bool) -> None:
    data = recipient_json(service, r)
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        shown = ", ".join(str(v) for v in value) or "-" if isinstance(value, list) else value
        out.print(f"{key:16} {shown}", markup=False)


def password_from(path: Path | None) -> str | None:
    return None if path is None else read_password_file(path, sys.stdin.read)


Name = Annotated[str, typer.Option("--name", help="Display name.")]
OptName = Annotated[str | None, typer.Option("--name", help="New display name.")]
Given = Annotated[str, typer.Option("--given-name", help="Given name (%g).")]
Surname = Annotated[str, typer.Option("--surname", help="Surname (%s).")]
Initials = Annotated[str, typer.Option("--initials", help="Initials (%i).")]
Extra = Annotated[
    list[str] | None, typer.Option("--address", help="An extra (secondary) SMTP address.")
]
PasswordFile = Annotated[
    Path | None,
    typer.Option("--password-file", help="File whose first line is the password ('-': stdin)."),
]
Ref = Annotated[str, typer.Argument(help="Alias, any of its addresses, or guid.")]
SiteFilter = Annotated[str | None, typer.Option("--site", help="Only recipients of this site.")]


@mailbox_app.command("add")
@handle_errors
def mailbox_add(
    alias: Annotated[str, typer.Argument(help="Alias (%m), unique in the site.")],
    name: Name,
    given_name: Given = "",
    surname: Surname = "",
    initials: Initials = "",
    address: Extra = None,
    password_file: PasswordFile = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a mailbox, addressed by the site's template."""
    with admin(data_dir) as service:
        r = service.add_recipient(
            ObjectKind.MAILBOX,
            alias,
            display_name=name,
            given_name=given_name,
            surname=surname,
            initials=initials,
            extra_addresses=address or [],
            password=password_from(password_file),
        )
        warn_renamed(service, r)
        print_recipient(service, r, as_json)


def warn_renamed(service: AdminService, recipient: Recipient) -> None:
    """On stderr: the new recipient did not get the address its template wanted."""
    collision = service.address_collision(recipient)
    if collision is not None:
        _warn_collision(collision)


def _warn_collision(col: Collision) -> None:
    err.print(
        f"warning: {col.wanted} is held by {col.held_by}: {col.alias} was given {col.given} "
        "instead, to avoid a collision",
        markup=False,
    )


@contact_app.command("add")
@handle_errors
def contact_add(
    alias: Annotated[str, typer.Argument(help="Alias (%m), unique in the site.")],
    name: Name,
    target: Annotated[str, typer.Option("--target", help="External address mail is forwarded to.")],
    address: Extra = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a contact (custom recipient) forwarding to an external address."""
    with admin(data_dir) as service:
        r = service.add_recipient(
            ObjectKind.CONTACT,
            alias,
            display_name=name,
            target=target,
            extra_addresses=address or [],
        )
        warn_renamed(service, r)
        print_recipient(service, r, as_json)


@group_app.command("add")
@handle_errors
def group_add(
    alias: Annotated[str, typer.Argument(help="Alias (%m), unique in the site.")],
    name: Name,
    member: Annotated[
        list[str] | None, typer.Option("--member", help="A member (repeatable).")
    ] = None,
    address: Extra = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a group (distribution list)."""
    with admin(data_dir) as service:
        r = service.add_recipient(
            ObjectKind.GROUP,
            alias,
            display_name=name,
            members=member or [],
            extra_addresses=address or [],
        )
        warn_renamed(service, r)
        print_recipient(service, r, as_json)


def _register_common(sub: typer.Typer, kind: ObjectKind) -> None:
    """list / show / remove are the same for every recipient kind."""

    @sub.command("list")
    @handle_errors
    def list_(site: SiteFilter = None, data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
        """List recipients of this kind (all sites the directory knows)."""
        with admin(data_dir) as service:
            print_recipients(service, service.list_recipients(kind, site), as_json)

    @sub.command("show")
    @handle_errors
    def show(ref: Ref, data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
        """Show one recipient with all its addresses."""
        with admin(data_dir) as service:
            print_recipient(service, service.get_recipient(ref, kind), as_json)

    @sub.command("remove")
    @handle_errors
    def remove(ref: Ref, data_dir: DataDir = None) -> None:
        """Delete a recipient (a tombstone replicates the deletion)."""
        with admin(data_dir) as service:
            r = service.remove_recipient(ref, kind)
            out.print(f"removed {kind} {r.alias} (tombstone usn {r.usn_changed})")


for _sub, _kind in (
    (mailbox_app, ObjectKind.MAILBOX),
    (contact_app, ObjectKind.CONTACT),
    (group_app, ObjectKind.GROUP),
):
    _register_common(_sub, _kind)

AddAddr = Annotated[
    list[str] | None, typer.Option("--add-address", help="Add a secondary address.")
]
RemoveAddr = Annotated[
    list[str] | None, typer.Option("--remove-address", help="Remove a secondary address.")
]
Primary = Annotated[str | None, typer.Option("--primary", help="Make this address the primary.")]


@mailbox_app.command("set")
@handle_errors
def mailbox_set(
    ref: Ref,
    name: OptName = None,
    given_name: Annotated[str | None, typer.Option("--given-name")] = None,
    surname: Annotated[str | None, typer.Option("--surname")] = None,
    initials: Annotated[str | None, typer.Option("--initials")] = None,
    add_address: AddAddr = None,
    remove_address: RemoveAddr = None,
    primary: Primary = None,
    password_file: PasswordFile = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a mailbox: names, addresses, password."""
    changes = RecipientChanges(
        display_name=name,
        given_name=given_name,
        surname=surname,
        initials=initials,
        add_addresses=add_address or [],
        remove_addresses=remove_address or [],
        primary_address=primary,
    )
    with admin(data_dir) as service:
        r = service.update_recipient(ref, changes, ObjectKind.MAILBOX, password_from(password_file))
        print_recipient(service, r, as_json)


@contact_app.command("set")
@handle_errors
def contact_set(
    ref: Ref,
    name: OptName = None,
    target: Annotated[str | None, typer.Option("--target", help="New external address.")] = None,
    add_address: AddAddr = None,
    remove_address: RemoveAddr = None,
    primary: Primary = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a contact: name, target, addresses."""
    changes = RecipientChanges(
        display_name=name,
        target=target,
        add_addresses=add_address or [],
        remove_addresses=remove_address or [],
        primary_address=primary,
    )
    with admin(data_dir) as service:
        print_recipient(
            service, service.update_recipient(ref, changes, ObjectKind.CONTACT), as_json
        )


@group_app.command("set")
@handle_errors
def group_set(
    ref: Ref,
    name: OptName = None,
    add_member: Annotated[list[str] | None, typer.Option("--add-member")] = None,
    remove_member: Annotated[list[str] | None, typer.Option("--remove-member")] = None,
    add_address: AddAddr = None,
    remove_address: RemoveAddr = None,
    primary: Primary = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a group: name, members, addresses."""
    changes = RecipientChanges(
        display_name=name,
        add_addresses=add_address or [],
        remove_addresses=remove_address or [],
        primary_address=primary,
    )
    with admin(data_dir) as service:
        r = service.update_recipient(ref, changes, ObjectKind.GROUP)
        if add_member or remove_member:
            r = service.set_members(r.guid, add_member or [], remove_member or [])
        print_recipient(service, r, as_json)


# -- addressing -------------------------------------------------------------------------------


@addressing_app.command("show")
@handle_errors
def addressing_show(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Show this site's SMTP address template."""
    with admin(data_dir) as service:
        template = service.addressing()
        if as_json:
            emit_json({"site": service.directory.local_site, "smtp": template})
        else:
            out.print(f"SMTP  {template}", markup=False)


def _progress_factory(progress: Progress) -> Callable[[int], Callable[[int], None] | None]:
    def start(total: int) -> Callable[[int], None] | None:
        if total < 1000:
            return None  # a bar for a blink is noise
        task = progress.add_task("re-addressing recipients", total=total)
        progress.start()
        return lambda n: progress.advance(task, n)

    return start


def print_addressing(result: AddressingResult, as_json: bool, dry_run: bool) -> None:
    plan = result.plan
    changes = plan.changed if plan else []
    if as_json:
        emit_json(
            {
                "old_template": result.old_template,
                "new_template": result.new_template,
                "dry_run": dry_run,
                "updated": result.updated,
                "changes": [
                    {"alias": c.recipient.alias, "old": c.old_primary, "new": c.new_primary}
                    for c in changes
                ],
                "collisions": [
                    {"alias": c.alias, "wanted": c.wanted, "given": c.given, "held_by": c.held_by}
                    for c in (plan.collisions if plan else [])
                ],
            }
        )
        return
    out.print(f"SMTP template: {result.old_template} -> {result.new_template}", markup=False)
    for c in changes:
        out.print(f"  {c.recipient.alias}: {c.old_primary or '-'} -> {c.new_primary}", markup=False)
    for col in plan.collisions if plan else []:
        out.print(
            f"  collision: {col.alias} wanted {col.wanted}, held by {col.held_by}; given {col.given}",
            markup=False,
        )
    if plan is not None and not dry_run:
        for col in plan.collisions:
            _warn_collision(col)
    if plan is None:
        out.print("recipients not updated: only new recipients get the new template")
    elif dry_run:
        out.print(f"dry run: {len(changes)} recipient(s) would change; nothing was changed")
    else:
        out.print(f"{result.updated} recipient(s) re-addressed")


@addressing_app.command("set")
@handle_errors
def addressing_set(
    address_type: Annotated[str, typer.Argument(metavar="TYPE", help="Address type: smtp.")],
    template: Annotated[
        str, typer.Argument(help="Template, e.g. '@example.com' or '%1g%s@example.com'.")
    ],
    update_recipients: Annotated[
        bool,
        typer.Option("--update-recipients", help="Re-address every recipient of the site now."),
    ] = False,
    drop_old: Annotated[
        bool, typer.Option("--drop-old", help="Do not keep old primaries as secondaries.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the full diff; change nothing.")
    ] = False,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Change the site's SMTP template (and optionally re-address all recipients)."""
    with admin(data_dir) as service:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        )
        try:
            result = service.set_addressing(
                address_type,
                template,
                update_recipients=update_recipients,
                drop_old=drop_old,
                dry_run=dry_run,
                progress_total=None if as_json else _progress_factory(progress),
            )
        finally:
            if progress.live.is_started:  # stop() on a non-terminal prints a blank line
                progress.stop()
        print_addressing(result, as_json, dry_run)


# -- directory export / import ------------------------------------------------------------------


@directory_app.command("export")
@handle_errors
def directory_export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Write every directory object (tombstones too, secrets never) as JSON lines."""
    with admin(data_dir) as service:
        lines = service.export_directory()
        if output is None:
            for line in lines:
                sys.stdout.write(line + "\n")
            return
        count = 0
        with output.open("w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line + "\n")
                count += 1
        err.print(f"exported {count} object(s) to {output}", markup=False)


@directory_app.command("import")
@handle_errors
def directory_import(
    source: Annotated[Path, typer.Argument(help="JSON lines file ('-': stdin).")],
    data_dir: DataDir = None,
) -> None:
    """Import objects from an export; idempotent, all-or-nothing."""
    with admin(data_dir) as service:
        if str(source) == "-":
            report = service.import_directory(sys.stdin)
        else:
            try:
                handle = source.open(encoding="utf-8")
            except OSError as exc:
                raise NotFoundError(f"cannot read {source}: {exc.strerror}") from exc
            with handle:
                report = service.import_directory(handle)
        out.print(
            f"created {report.created}, updated {report.updated}, unchanged {report.unchanged}"
        )


site_app = typer.Typer(
    help="This site: its key and its place in the organisation.", no_args_is_help=True
)
app.add_typer(site_app, name="site")


@site_app.command("key")
@handle_errors
def site_key(data_dir: DataDir = None) -> None:
    """Print this site's public key (first line, the form --peer-key takes), then its fingerprint."""
    with admin(data_dir) as service:
        token, print_ = service.site_key()
        out.print(token, markup=False)
        out.print(print_, markup=False)


@site_app.command("show")
@handle_errors
def site_show(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Show the organisation, this site and server, the Site Addressing template, the site
    key and the SHA-256 fingerprint of the TLS certificate (what peers pin)."""
    with admin(data_dir) as service:
        info = service.org()
        token, print_ = service.site_key()
        data = {
            "organization": info.name,
            "site": info.local_site,
            "server": info.local_server,
            "addressing": service.addressing(),
            "public_key": token,
            "fingerprint": print_,
            "tls_fingerprint": certificate_fingerprint(service.config),
            "data_dir": str(service.config.data_dir),
        }
        if as_json:
            emit_json(data)
            return
        for key, value in data.items():
            out.print(f"{key:13} {value}", markup=False)


# The lab's commands (`lab up`, `status`, `down`) are added by site.py: sitemail.lab and this
# package are siblings that do not import each other.
lab_app = typer.Typer(help="The article's organisation on this machine.", no_args_is_help=True)
app.add_typer(lab_app, name="lab")


# -- the Internet Mail Service ------------------------------------------------------------------

route_app = typer.Typer(
    help="E-Mail Domain routes: forward all messages for a domain to a host (bypasses DNS).",
    no_args_is_help=True,
)
queue_app = typer.Typer(help="The message queue of this server.", no_args_is_help=True)
app.add_typer(route_app, name="domain-route")
app.add_typer(queue_app, name="queue")


@route_app.command("add")
@handle_errors
def route_add(
    domain: Annotated[
        str, typer.Argument(help="Domain (and its subdomains); '#domain' for exactly it.")
    ],
    host: Annotated[str, typer.Argument(help="Host, IP address or host:port to forward to.")],
    data_dir: DataDir = None,
) -> None:
    """Forward all messages for DOMAIN to HOST."""
    with admin(data_dir) as service:
        entry = service.add_domain_route(domain, host)
        out.print(f"route added: {entry.domain} -> {entry.host}", markup=False)


@route_app.command("list")
@handle_errors
def route_list(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """List this site's domain routes."""
    with admin(data_dir) as service:
        routes = service.list_domain_routes()
        if as_json:
            emit_json([{"domain": r.domain, "host": r.host, "site": r.site} for r in routes])
            return
        for r in routes:
            out.print(f"{r.domain:30} -> {r.host}", markup=False)
        out.print(f"{len(routes)} route(s)")


@route_app.command("remove")
@handle_errors
def route_remove(domain: Annotated[str, typer.Argument()], data_dir: DataDir = None) -> None:
    """Remove the route for DOMAIN."""
    with admin(data_dir) as service:
        entry = service.remove_domain_route(domain)
        out.print(f"route removed: {entry.domain}", markup=False)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _entry_json(entry: QueueEntry) -> dict[str, Any]:
    return {
        "queue_id": entry.queue_id,
        "received_at": _when(entry.received_at),
        "sender": entry.sender,
        "size": entry.size,
        "message_id": entry.message_id,
        "held": entry.held,
        "is_dsn": entry.is_dsn,
        "recipients": [
            {
                "address": r.address,
                "state": r.state,
                "attempts": r.attempts,
                "next_attempt_at": _when(r.next_attempt_at),
                "last_status": r.last_status,
                "last_text": r.last_text,
                "doing": r.doing,
                "doing_since": _when(r.doing_since) if r.doing_since is not None else None,
                "attempt_started": (
                    _when(r.attempt_started) if r.attempt_started is not None else None
                ),
            }
            for r in entry.recipients
        ],
    }


def _ask_server(service: AdminService) -> None:
    """Queue views show what the running server's deliveries in flight are doing: it is
    asked over the local control channel (admin/wake.py; nothing when none runs)."""
    data_dir = service.config.data_dir
    service.attempts = lambda: ask_attempts(data_dir) or []


def _doing(r: RecipientEntry, now: float) -> str:
    """ "now: waiting for the reply to DATA (...) since 12:00:03 (42 s)", or "" when idle."""
    if not r.doing or r.doing_since is None:
        return ""
    since = datetime.fromtimestamp(r.doing_since, UTC).strftime("%H:%M:%S")
    return f"now: {r.doing} since {since} ({span(max(0.0, now - r.doing_since))})"


@queue_app.command("list")
@handle_errors
def queue_list(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """List queued messages with each recipient's state and last error."""
    with admin(data_dir) as service:
        _ask_server(service)
        entries = service.queue.entries()
        now = service.clock.now()
        if as_json:
            emit_json([_entry_json(e) for e in entries])
            return
        for e in entries:
            flags = " HELD" if e.held else ""
            out.print(
                f"{e.queue_id}{flags}  {_when(e.received_at)}  {e.size:>8}  <{e.sender}>",
                markup=False,
            )
            for r in e.recipients:
                text = r.last_text
                if text.split(" ", 2)[1:2] == [r.last_status]:  # "451 4.3.5 ..." says it already
                    text = text.split(" ", 2)[2] if text.count(" ") >= 2 else text
                reason = f"  ({r.last_status} {text})" if r.last_text else ""
                out.print(f"    {r.state:9} {r.address}  tries {r.attempts}{reason}", markup=False)
                if doing := _doing(r, now):
                    out.print(f"              {doing}", markup=False)
        out.print(f"{len(entries)} message(s) in the queue")


@queue_app.command("show")
@handle_errors
def queue_show(
    queue_id: Annotated[str, typer.Argument()],
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Show one queued message: envelope, recipients and headers."""
    with admin(data_dir) as service:
        _ask_server(service)
        entry, content = service.queue.show(queue_id)
        now = service.clock.now()
        head = content.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        if as_json:
            emit_json(_entry_json(entry) | {"headers": head})
            return
        emit = _entry_json(entry)
        for key in ("queue_id", "received_at", "sender", "size", "message_id", "held"):
            out.print(f"{key:12} {emit[key]}", markup=False)
        for r in entry.recipients:
            out.print(
                f"recipient    {r.address} {r.state} tries {r.attempts} {r.last_status} {r.last_text}",
                markup=False,
            )
            if doing := _doing(r, now):
                out.print(f"             {doing}", markup=False)
        out.print(head, markup=False)


QueueRef = Annotated[str, typer.Argument(help="Queue id.")]


@queue_app.command("retry")
@handle_errors
def queue_retry(
    queue_id: Annotated[
        str | None, typer.Argument(help="Queue id (default: every message).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Make deferred recipients due now (a running server is nudged to send them at once)."""
    with admin(data_dir) as service:
        count = service.queue.retry(queue_id)
        out.print(f"{count} recipient(s) due now")
    poke(resolve_data_dir(data_dir))


@queue_app.command("hold")
@handle_errors
def queue_hold(queue_id: QueueRef, data_dir: DataDir = None) -> None:
    """Keep a message in the queue without delivery attempts."""
    with admin(data_dir) as service:
        service.queue.set_held(queue_id, held=True)
        out.print(f"{queue_id.upper()} held")


@queue_app.command("release")
@handle_errors
def queue_release(queue_id: QueueRef, data_dir: DataDir = None) -> None:
    """Let a held message be delivered again."""
    with admin(data_dir) as service:
        service.queue.set_held(queue_id, held=False)
        out.print(f"{queue_id.upper()} released")
    poke(resolve_data_dir(data_dir))


@queue_app.command("delete")
@handle_errors
def queue_delete(queue_id: QueueRef, data_dir: DataDir = None) -> None:
    """Delete a message from the queue (tracked; no DSN is sent)."""
    with admin(data_dir) as service:
        service.queue.delete(queue_id)
        out.print(f"{queue_id.upper()} deleted")


def main() -> None:
    """Console-script entry point."""
    app()


# Replication, KCC, `directory list`, routing, the doctor and `track` live in their own
# modules; importing them registers their commands.
from sitemail.admin import (  # noqa: E402
    cli_api,
    cli_backup,
    cli_context,
    cli_dkim,
    cli_dns,
    cli_doctor,
    cli_queue,
    cli_replication,
    cli_routing,
    cli_server,
    cli_service,
    cli_site,
    cli_tls,
    cli_tracking,
)
