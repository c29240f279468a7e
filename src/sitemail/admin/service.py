"""AdminService: every administrative operation, shared by the CLI, the HTTP API and the console.

One job: open a server's data dir (config, database, directory) and carry out admin operations
on it with validation, returning values (never printing). Front ends only parse and render.
Works whether or not the server is running: SQLite in WAL mode lets both write safely.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from sitemail.admin.filemodes import DB_FILE, create_private, secure
from sitemail.admin.replication import ReplicationAdmin
from sitemail.admin.routing import RoutingAdmin
from sitemail.admin.siteremoval import RemovalReport, remove_site
from sitemail.admin.tls import make_self_signed
from sitemail.admin.token import admin_url, ensure_token
from sitemail.admin.tracking import TrackingAdmin
from sitemail.config import CONFIG_FILE, ServerConfig, load_config, render_config
from sitemail.core.address import normalize_domain
from sitemail.core.clock import Clock, SystemClock
from sitemail.core.errors import ConfigError, ConflictError, InvalidValueError, NotFoundError
from sitemail.directory import (
    AddressFields,
    AddressingResult,
    Collision,
    Directory,
    DomainRouteEntry,
    ImportReport,
    ObjectKind,
    OrgInfo,
    Recipient,
    RecipientChanges,
    add_domain_route,
    export_lines,
    hash_password,
    import_lines,
    list_domain_routes,
    remove_domain_route,
    set_addressing,
)
from sitemail.directory.service import check_name
from sitemail.mailauth.dkimkeys import generate_dkim_keys
from sitemail.queue.admin import QueueAdmin
from sitemail.queue.attempts import Attempt
from sitemail.replication.keys import KEY_FILE, fingerprint, generate_site_key, load_site_key
from sitemail.store import Store, default_url, open_store, upgrade
from sitemail.store.transfer import CopyReport, copy_store

__all__ = ["AdminService", "read_password_file"]


def read_password_file(path: Path, stdin: Callable[[], str] | None = None) -> str:
    """The first line of `path` (`-` = standard input), without its line ending."""
    if str(path) == "-":
        text = stdin() if stdin else ""
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:  # sysexits EX_NOINPUT (66): an input file cannot be read
            raise NotFoundError(f"cannot read password file {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise InvalidValueError(f"password file {path} is not UTF-8 text") from exc
    password = text.splitlines()[0] if text else ""
    if not password:
        raise InvalidValueError(f"password file {path} is empty")
    return password


class AdminService:
    """Administrative operations on one server's data dir."""

    def __init__(self, config: ServerConfig, store: Store, clock: Clock | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock or SystemClock()
        self.directory = Directory(store, self.clock)
        # What the running server's deliveries in flight are doing (queue views show it).
        self.attempts: Callable[[], Sequence[Attempt]] | None = None

    @classmethod
    def open(cls, data_dir: Path, clock: Clock | None = None) -> AdminService:
        config = load_config(data_dir)
        store = open_store(config.database_url or default_url(data_dir))
        upgrade(store)
        return cls(config, store, clock)

    def close(self) -> None:
        self.store.close()

    # -- init -------------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        data_dir: Path,
        *,
        org: str,
        site: str,
        server: str,
        domain: str,
        listen: Sequence[str],
        database_url: str = "",
        clock: Clock | None = None,
    ) -> AdminService:
        """Create a data dir: config, database, directory, self-signed TLS certificate."""
        check_name("organisation name", org)
        check_name("site name", site)
        check_name("server name", server)
        domain = normalize_domain(domain)
        if (data_dir / CONFIG_FILE).exists():
            raise ConflictError(f"{data_dir} is already a sitemail data dir")
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            data_dir.chmod(0o700)  # the server's alone, whatever the umask (admin/filemodes.py)
        except OSError as exc:
            raise ConfigError(f"cannot create data dir {data_dir}: {exc.strerror}") from exc
        config_text = render_config(
            server=server, site=site, listen=list(listen), database_url=database_url
        )
        create_private(data_dir / CONFIG_FILE)  # it may hold the database's password
        (data_dir / CONFIG_FILE).write_text(config_text, encoding="utf-8")
        if not database_url:
            create_private(data_dir / DB_FILE)  # SQLite's -wal and -shm files take its mode
        try:
            service = cls.open(data_dir, clock)
            service.directory.initialize(
                org=org, site=site, server=server, domain=domain, listen=list(listen)
            )
        except Exception:
            (data_dir / CONFIG_FILE).unlink(missing_ok=True)  # leave no half-made data dir
            raise
        config = service.config
        key = generate_site_key(data_dir)
        generate_dkim_keys(data_dir, site)
        ensure_token(data_dir)
        service.directory.update_site_attrs(public_key=key.public.token)
        make_self_signed(
            config.path(config.tls.cert_file),
            config.path(config.tls.key_file),
            [f"{server.lower()}.{domain}", domain],
            list(listen),
        )
        secure(config)
        return service

    def join(self, data_dir: Path, *, server: str, listen: Sequence[str]) -> AdminService:
        """A new server of this site (`sitemail server add`): its own data dir, name and
        addresses, on this site's PostgreSQL database, with the site's one key (so every
        server signs replication as the site) and a Server object in the directory."""
        check_name("server name", server)
        url = self.config.database_url
        if not url.startswith("postgresql"):
            raise ConfigError(
                "a site of several servers shares one PostgreSQL database: move this one "
                "first (sitemail store migrate --to postgresql+psycopg://...)"
            )
        if (data_dir / CONFIG_FILE).exists():
            raise ConflictError(f"{data_dir} is already a sitemail data dir")
        if server.lower() in {
            o.alias.lower() for o in self.directory.list_objects(ObjectKind.SERVER)
        }:
            raise ConflictError(f"server {server} exists already")
        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir.chmod(0o700)
        site = self.org().local_site
        create_private(data_dir / CONFIG_FILE)
        (data_dir / CONFIG_FILE).write_text(
            render_config(server=server, site=site, listen=list(listen), database_url=url),
            encoding="utf-8",
        )
        key = data_dir / KEY_FILE
        key.parent.mkdir(mode=0o700, exist_ok=True)
        create_private(key)
        key.write_bytes((self.config.data_dir / KEY_FILE).read_bytes())
        self.directory.add_server(server, list(listen))
        ensure_token(data_dir)
        joined = AdminService.open(data_dir, self.clock)
        make_self_signed(
            joined.config.path(joined.config.tls.cert_file),
            joined.config.path(joined.config.tls.key_file),
            [f"{server.lower()}.{self.directory.routing_domain()}"],
            list(listen),
        )
        secure(joined.config)
        return joined

    def migrate_store(self, url: str) -> CopyReport:
        """Copy this server's whole database to the empty one at `url` (the server stopped),
        then point the configuration at it; the old database is left as it was."""
        if url == (self.config.database_url or default_url(self.config.data_dir)):
            raise ConflictError("that is the database this server already uses")
        target = open_store(url)
        try:
            report = copy_store(self.store, target)
        finally:
            target.close()
        path = self.config.data_dir / CONFIG_FILE
        lines = path.read_text(encoding="utf-8").splitlines()
        setting = f"database_url = {json.dumps(url)}"  # a TOML basic string too
        at = next((i for i, line in enumerate(lines) if line.startswith("database_url =")), None)
        if at is None:  # SQLite by default: the key goes in [server], after its `listen`
            at = next(i for i, line in enumerate(lines) if line.startswith("listen ="))
            lines.insert(at + 1, setting)
        else:
            lines[at] = setting
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return report

    def site_key(self) -> tuple[str, str]:
        """This site's public key token and its fingerprint (the private key never leaves)."""
        key = load_site_key(self.config.data_dir)
        return key.public.token, fingerprint(key.public.token)

    def admin_token(self) -> str:
        """The admin API's bearer token (made now for a data dir older than the API)."""
        return ensure_token(self.config.data_dir)

    def admin_url(self) -> str:
        """Where `sitemail serve` serves the admin API ("" when [admin] port = 0)."""
        return admin_url(self.config)

    def org(self) -> OrgInfo:
        return self.directory.org()

    # -- recipients -------------------------------------------------------------------------

    def add_recipient(
        self,
        kind: ObjectKind,
        alias: str,
        *,
        display_name: str,
        given_name: str = "",
        surname: str = "",
        initials: str = "",
        target: str = "",
        members: Sequence[str] = (),
        extra_addresses: Sequence[str] = (),
        password: str | None = None,
    ) -> Recipient:
        return self.directory.add_recipient(
            kind,
            alias,
            display_name=display_name,
            given_name=given_name,
            surname=surname,
            initials=initials,
            target=target,
            members=members,
            extra_addresses=extra_addresses,
            password_hash=hash_password(password) if password is not None else None,
        )

    def address_collision(self, recipient: Recipient) -> Collision | None:
        """How a new recipient's primary differs from what the site's template wanted, when
        the wanted address was taken (numbered instead: `user2` -> `user22`), else None."""
        fields = AddressFields(
            recipient.alias,
            recipient.given_name,
            recipient.surname,
            recipient.initials,
            recipient.display_name,
        )
        wanted = self.directory.template().address(fields)
        if not recipient.primary_smtp or recipient.primary_smtp.lower() == wanted.lower():
            return None
        owner = self.directory.lookup(wanted)
        held_by = f"{owner.alias} ({owner.site})" if owner is not None else "another object"
        return Collision(recipient.alias, wanted, recipient.primary_smtp, held_by)

    def list_recipients(self, kind: ObjectKind | None, site: str | None = None) -> list[Recipient]:
        return self.directory.list_recipients(kind, site=site)

    def page_recipients(
        self,
        kind: ObjectKind | None = None,
        *,
        site: str | None = None,
        text: str = "",
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[Recipient], int]:
        return self.directory.page_recipients(
            kind, site=site, text=text, offset=offset, limit=limit
        )

    def get_recipient(self, ref: str, kind: ObjectKind | None = None) -> Recipient:
        return self.directory.get(ref, kind)

    def update_recipient(
        self,
        ref: str,
        changes: RecipientChanges,
        kind: ObjectKind | None = None,
        password: str | None = None,
    ) -> Recipient:
        if password is not None:
            self.directory.set_password(ref, hash_password(password))
        return self.directory.update_recipient(ref, changes, kind)

    def remove_recipient(self, ref: str, kind: ObjectKind | None = None) -> Recipient:
        return self.directory.remove_recipient(ref, kind)

    def set_members(self, ref: str, add: Sequence[str], remove: Sequence[str]) -> Recipient:
        return self.directory.set_members(ref, add, remove)

    def members(self, group: Recipient) -> list[Recipient]:
        return self.directory.member_recipients(group)

    def name_of(self, guid: str) -> str:
        try:
            return self.directory.get(guid).alias
        except Exception:
            return guid

    # -- addressing -------------------------------------------------------------------------

    def addressing(self) -> str:
        return str(self.directory.template())

    def set_addressing(
        self,
        address_type: str,
        template: str,
        *,
        update_recipients: bool,
        drop_old: bool = False,
        dry_run: bool = False,
        progress_total: Callable[[int], Callable[[int], None] | None] | None = None,
    ) -> AddressingResult:
        if address_type.lower() != "smtp":
            raise InvalidValueError(f"unknown address type {address_type!r}: only 'smtp' exists")
        if drop_old and not update_recipients:
            raise InvalidValueError("--drop-old only makes sense with --update-recipients")
        return set_addressing(
            self.directory,
            template,
            update_recipients=update_recipients,
            drop_old=drop_old,
            dry_run=dry_run,
            progress_total=progress_total,
        )

    # -- IMS: domain routes and the queue --------------------------------------------------

    def add_domain_route(self, domain: str, host: str) -> DomainRouteEntry:
        return add_domain_route(self.directory, domain, host)

    def list_domain_routes(self) -> list[DomainRouteEntry]:
        return list_domain_routes(self.directory)

    def remove_domain_route(self, domain: str) -> DomainRouteEntry:
        return remove_domain_route(self.directory, domain)

    @property
    def replication(self) -> ReplicationAdmin:
        return ReplicationAdmin(self.config, self.directory, self.clock)

    @property
    def routing(self) -> RoutingAdmin:
        return RoutingAdmin(self.directory, self.config)

    @property
    def queue(self) -> QueueAdmin:
        return QueueAdmin(self.store, self.clock, self.directory.local_site, self.attempts)

    @property
    def tracking(self) -> TrackingAdmin:
        """Message tracking across sites: `ask_sites(ref)`, `path(ref)` (docs/tracking.md)."""
        return TrackingAdmin(self.config, self.directory, self.clock)

    def remove_site(self, site: str, *, dry_run: bool = False) -> RemovalReport:
        """Remove another site from the organisation, here (admin/siteremoval.py)."""
        return remove_site(
            self.directory, self.replication, self.routing, self.queue, site, dry_run=dry_run
        )

    # -- export / import --------------------------------------------------------------------

    def export_directory(self) -> Iterator[str]:
        return export_lines(self.directory)

    def import_directory(self, lines: Iterable[str]) -> ImportReport:
        return import_lines(self.directory, lines)
