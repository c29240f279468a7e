"""The directory: the organisation, its sites and servers, and their recipients.

One job: create, read, change and delete directory objects with the rules of the article's
directory: each site writes only its own naming context (objects of other sites are read-only
replicas), every change takes the owning site's next USN, deletes leave tombstones, and every
proxy address is unique across the organisation. Collaborators: `objects` for the SQL,
`addressing` for generating addresses. Used by the admin service, SMTP policy and routing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Text,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    type_coerce,
)

from sitemail.core.address import parse_address
from sitemail.core.clock import Clock
from sitemail.core.errors import (
    ConflictError,
    InvalidValueError,
    NotFoundError,
    PermissionDeniedError,
    StoreError,
)
from sitemail.directory.addressing import AddressFields, Template, parse_template
from sitemail.directory.model import (
    RECIPIENT_KINDS,
    Guid,
    ObjectKind,
    Proxy,
    Recipient,
    format_proxy,
    parse_proxy,
)
from sitemail.directory.objects import (
    index_proxies,
    insert_object,
    new_guid,
    owners_of,
    promote_held_claims,
    row_to_recipient,
    unindex_proxies,
    update_object,
)
from sitemail.directory.readdress import ReaddressPlan, apply_readdress, plan_readdress
from sitemail.store.engine import Store
from sitemail.store.tables import dir_object, mailbox_secret, organization, proxy_address

__all__ = [
    "AddressOwner",
    "AddressingResult",
    "Directory",
    "OrgInfo",
    "RecipientChanges",
    "set_addressing",
]

_NAME_MAX = 64


@dataclass(frozen=True, slots=True)
class OrgInfo:
    name: str
    guid: str
    local_site: str
    local_server: str


@dataclass(frozen=True, slots=True)
class AddressOwner:
    """Who holds an address: the answer of the hot-path lookup."""

    guid: Guid
    kind: ObjectKind
    site: str
    alias: str
    address: str
    is_primary: bool


@dataclass(frozen=True, slots=True)
class RecipientChanges:
    """Optional edits to one recipient (None: leave as is)."""

    display_name: str | None = None
    given_name: str | None = None
    surname: str | None = None
    initials: str | None = None
    target: str | None = None
    add_addresses: Sequence[str] = ()
    remove_addresses: Sequence[str] = ()
    primary_address: str | None = None


def check_name(kind: str, name: str) -> str:
    """Directory names and aliases: 1-64 characters of letters, digits, `.`, `-`, `_`."""
    if not name or len(name) > _NAME_MAX:
        raise InvalidValueError(f"{kind} must be 1-{_NAME_MAX} characters, got {name!r}")
    if not all(c.isalnum() or c in "._-" for c in name) or not name.isascii():
        raise InvalidValueError(
            f"{kind} {name!r} may contain only ASCII letters, digits, '.', '-' and '_'"
        )
    return name


class Directory:
    """The directory as seen from one server of one site."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._org: OrgInfo | None = None
        self._lookup_sql: str | None = None

    # -- the organisation -------------------------------------------------------------------

    def initialize(
        self,
        *,
        org: str,
        site: str,
        server: str,
        domain: str,
        listen: Sequence[str],
        site_display_name: str = "",
    ) -> OrgInfo:
        """Create the organisation, this site, its server and its Site Addressing (once)."""
        check_name("organisation name", org)
        check_name("site name", site)
        check_name("server name", server)
        template = parse_template(f"%m@{domain}")
        now = self.clock.now()
        with self.store.write() as conn:
            if conn.execute(select(func.count()).select_from(organization)).scalar_one():
                raise ConflictError("this data dir already holds an organisation")
            info = OrgInfo(org, str(new_guid()), site, server)
            conn.execute(
                insert(organization).values(
                    id=1, name=org, guid=info.guid, local_site=site, local_server=server
                )
            )
            insert_object(
                conn,
                site=site,
                kind=ObjectKind.SITE,
                name=site,
                display_name=site_display_name or site,
                # routing_domain: where the site's directory-service mailbox lives for good,
                # even after Site Addressing moves recipients to a shared domain.
                attrs={"organization": org, "routing_domain": template.domain},
                now=now,
            )
            _insert_server(conn, site, server, listen, now)
            insert_object(
                conn,
                site=site,
                kind=ObjectKind.SITE_ADDRESSING,
                name="Site Addressing",
                display_name="Site Addressing",
                attrs={"smtp": str(template)},
                now=now,
            )
        self._org = info
        return info

    def org(self) -> OrgInfo:
        if self._org is None:
            with self.store.read() as conn:
                row = conn.execute(select(organization)).first()
            if row is None:
                raise StoreError("the database holds no organisation (run `sitemail init`)")
            self._org = OrgInfo(row.name, row.guid, row.local_site, row.local_server)
        return self._org

    @property
    def local_site(self) -> str:
        return self.org().local_site

    def list_objects(
        self, kind: ObjectKind, *, site: str | None = None, include_deleted: bool = False
    ) -> list[Recipient]:
        query = select(dir_object).where(dir_object.c.kind == str(kind))
        if site is not None:
            query = query.where(dir_object.c.site == site)
        if not include_deleted:
            query = query.where(dir_object.c.is_deleted.is_(False))
        with self.store.read() as conn:
            rows = conn.execute(query.order_by(dir_object.c.site, dir_object.c.name)).all()
        return [row_to_recipient(r) for r in rows]

    def released_since(self, address: str, since: float) -> str | None:
        """The site of a recipient removed at `since` or later (its clock) that held
        `address`, or None. Reads the recent tombstones (no index: only unknown addresses of
        the organisation's domains come here)."""
        c = dir_object.c
        key = address.strip().lower()
        with self.store.read() as conn:
            rows = conn.execute(
                select(c.site, c.attrs)
                .where(
                    c.kind.in_([str(k) for k in RECIPIENT_KINDS]),
                    c.is_deleted.is_(True),
                    c.changed_at >= since,
                    func.lower(type_coerce(c.attrs, Text)).contains(key, autoescape=True),
                )
                .order_by(c.changed_at.desc())
            ).all()
        for row in rows:
            released = row.attrs.get("released", [])
            if isinstance(released, list) and key in {str(a).lower() for a in released}:
                return str(row.site)
        return None

    def version(self) -> int:
        """A number that grows with every change held here, own or replicated: the sum over
        the known sites of the highest USN of theirs held here (an index probe per site).
        The router writes it into the trace, so a message that comes back can tell whether
        this site's directory changed since it last routed the message."""
        with self.store.read() as conn:
            value = conn.execute(_VERSION).scalar()
        return int(value or 0)

    def highest_usn(self, site: str | None = None) -> int:
        site = site or self.local_site
        with self.store.read() as conn:
            value = conn.execute(
                select(func.max(dir_object.c.usn_changed)).where(dir_object.c.site == site)
            ).scalar_one()
        return int(value or 0)

    def changes_since(self, site: str, usn: int, limit: int = 512) -> list[Recipient]:
        """Objects (tombstones included) of `site` changed after `usn`, oldest first."""
        with self.store.read() as conn:
            rows = conn.execute(
                select(dir_object)
                .where(dir_object.c.site == site, dir_object.c.usn_changed > usn)
                .order_by(dir_object.c.usn_changed)
                .limit(limit)
            ).all()
        return [row_to_recipient(r) for r in rows]

    def site_object(self, site: str | None = None) -> Recipient:
        site = site or self.local_site
        objects = self.list_objects(ObjectKind.SITE, site=site)
        if not objects:
            raise NotFoundError(f"no site {site!r} in the directory")
        return objects[0]

    def update_site_attrs(self, **attrs: Any) -> Recipient:
        """Change attributes of this site's own site object (a new USN; it replicates)."""
        with self.store.write() as conn:
            row = conn.execute(
                select(dir_object).where(
                    dir_object.c.site == self.local_site,
                    dir_object.c.kind == str(ObjectKind.SITE),
                    dir_object.c.is_deleted.is_(False),
                )
            ).first()
            if row is None:
                raise NotFoundError(f"no site object for {self.local_site}")
            obj = row_to_recipient(row)
            return update_object(conn, obj, now=self.clock.now(), attrs={**obj.attrs, **attrs})

    def add_server(self, server: str, listen: list[str]) -> None:
        """Another server of this site (several share one PostgreSQL database)."""
        site = self.org().local_site
        with self.store.write() as conn:
            _insert_server(conn, site, server, listen, self.clock.now())

    def routing_domain(self, site: str | None = None) -> str:
        """The domain of a site's directory-service mailbox (its routing address)."""
        obj = self.site_object(site)
        return str(obj.attrs.get("routing_domain") or self.template(site).domain).lower()

    # -- site addressing --------------------------------------------------------------------

    def template(self, site: str | None = None) -> Template:
        site = site or self.local_site
        with self.store.read() as conn:
            obj = self.addressing_object(conn, site)
        return parse_template(str(obj.attrs["smtp"]))

    def addressing_object(self, conn: Connection, site: str) -> Recipient:
        row = conn.execute(
            select(dir_object).where(
                dir_object.c.site == site,
                dir_object.c.kind == str(ObjectKind.SITE_ADDRESSING),
                dir_object.c.is_deleted.is_(False),
            )
        ).first()
        if row is None:
            raise NotFoundError(f"site {site!r} has no Site Addressing object")
        return row_to_recipient(row)

    def store_template(self, conn: Connection, template: Template) -> None:
        obj = self.addressing_object(conn, self.local_site)
        if obj.attrs.get("smtp") != str(template):
            update_object(
                conn, obj, now=self.clock.now(), attrs={**obj.attrs, "smtp": str(template)}
            )

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
        password_hash: str | None = None,
    ) -> Recipient:
        """Create a mailbox, contact or group in this site, addressed by the site's template."""
        check_name("alias", alias)
        if kind not in RECIPIENT_KINDS:
            raise InvalidValueError(f"{kind} is not a recipient kind")
        if kind is ObjectKind.CONTACT:
            target = str(parse_address(target))
        site = self.local_site
        fields = AddressFields(alias, given_name, surname, initials, display_name or alias)
        with self.store.write() as conn:
            if self._find_alias(conn, site, alias) is not None:
                raise ConflictError(f"alias {alias!r} is already used in site {site}")
            template = parse_template(str(self.addressing_object(conn, site).attrs["smtp"]))
            primary = self._free_address(conn, template, fields)
            proxies = [format_proxy(Proxy("SMTP", primary, True))]
            for extra in extra_addresses:
                proxies.append(format_proxy(Proxy("SMTP", str(parse_address(extra)), False)))
            member_guids = [self._resolve(conn, m).guid for m in members]
            attrs: dict[str, Any] = {"proxies": proxies}
            for key, value in (
                ("given_name", given_name),
                ("surname", surname),
                ("initials", initials),
                ("target", target),
            ):
                if value:
                    attrs[key] = value
            if kind is ObjectKind.GROUP:
                attrs["members"] = member_guids
            obj = insert_object(
                conn,
                site=site,
                kind=kind,
                name=alias,
                display_name=display_name or alias,
                attrs=attrs,
                now=self.clock.now(),
            )
            index_proxies(conn, obj.guid, proxies)
            if password_hash is not None:
                conn.execute(
                    insert(mailbox_secret).values(guid=obj.guid, password_hash=password_hash)
                )
        return obj

    def _free_address(self, conn: Connection, template: Template, fields: AddressFields) -> str:
        """The template's address for a new recipient, with a counter if it is taken."""
        local = template.local_part(fields)
        candidate, counter = f"{local}@{template.domain}", 1
        while owners_of(conn, [candidate.lower()]):
            counter += 1
            candidate = template.numbered(local, counter)
        return candidate

    def _find_alias(self, conn: Connection, site: str, alias: str) -> Recipient | None:
        row = conn.execute(
            select(dir_object).where(
                dir_object.c.site == site,
                dir_object.c.kind.in_([str(k) for k in RECIPIENT_KINDS]),
                func.lower(dir_object.c.name) == alias.lower(),
                dir_object.c.is_deleted.is_(False),
            )
        ).first()
        return row_to_recipient(row) if row is not None else None

    def _resolve(self, conn: Connection, ref: str) -> Recipient:
        """A recipient by alias (this site first), by any proxy address, or by guid."""
        found = self._find_alias(conn, self.local_site, ref)
        if found is None and "@" in ref:
            row = conn.execute(
                select(dir_object)
                .join(proxy_address, proxy_address.c.guid == dir_object.c.guid)
                .where(proxy_address.c.address_key == ref.strip().lower())
            ).first()
            found = row_to_recipient(row) if row is not None else None
        if found is None:
            rows = conn.execute(
                select(dir_object).where(
                    dir_object.c.kind.in_([str(k) for k in RECIPIENT_KINDS]),
                    dir_object.c.is_deleted.is_(False),
                    (func.lower(dir_object.c.name) == ref.lower()) | (dir_object.c.guid == ref),
                )
            ).all()
            if len(rows) > 1:
                sites = ", ".join(sorted(r.site for r in rows))
                raise ConflictError(
                    f"{ref!r} names recipients in several sites ({sites}): use an address"
                )
            found = row_to_recipient(rows[0]) if rows else None
        if found is None or found.is_deleted:
            raise NotFoundError(f"no recipient {ref!r} in the directory")
        return found

    def get(self, ref: str, kind: ObjectKind | None = None) -> Recipient:
        with self.store.read() as conn:
            found = self._resolve(conn, ref)
        if kind is not None and found.kind is not kind:
            raise NotFoundError(f"{ref!r} is a {found.kind}, not a {kind}")
        return found

    @staticmethod
    def by_guid_in(conn: Connection, guid: str) -> Recipient | None:
        """The live recipient with this guid, read in the caller's transaction (delivery)."""
        row = conn.execute(_BY_GUID, {"b_guid": guid}).first()
        if row is None or row.is_deleted or ObjectKind(row.kind) not in RECIPIENT_KINDS:
            return None
        return row_to_recipient(row)

    def _writable(self, conn: Connection, ref: str, kind: ObjectKind | None) -> Recipient:
        obj = self._resolve(conn, ref)
        if kind is not None and obj.kind is not kind:
            raise NotFoundError(f"{ref!r} is a {obj.kind}, not a {kind}")
        if obj.site != self.local_site:
            raise PermissionDeniedError(
                f"{obj.alias} belongs to site {obj.site}: it is a read-only replica here; "
                f"change it at its home site"
            )
        return obj

    def update_recipient(
        self, ref: str, changes: RecipientChanges, kind: ObjectKind | None = None
    ) -> Recipient:
        with self.store.write() as conn:
            obj = self._writable(conn, ref, kind)
            attrs = dict(obj.attrs)
            for key in ("given_name", "surname", "initials"):
                value = getattr(changes, key)
                if value is not None:
                    attrs[key] = value
            if changes.target is not None:
                if obj.kind is not ObjectKind.CONTACT:
                    raise InvalidValueError("only contacts have a target address")
                attrs["target"] = str(parse_address(changes.target))
            attrs["proxies"] = self._edit_proxies(obj, changes)
            if attrs["proxies"] != obj.attrs.get("proxies"):
                released = unindex_proxies(conn, obj.guid)
                index_proxies(conn, obj.guid, attrs["proxies"])
                kept = {parse_proxy(p).key for p in attrs["proxies"]}
                promote_held_claims(conn, released - kept)
            return update_object(
                conn, obj, now=self.clock.now(), attrs=attrs, display_name=changes.display_name
            )

    @staticmethod
    def _edit_proxies(obj: Recipient, changes: RecipientChanges) -> list[str]:
        proxies = obj.proxies
        keys = {p.key for p in proxies}
        for text in changes.add_addresses:
            address = str(parse_address(text))
            if address.lower() not in keys:
                proxies.append(Proxy("SMTP", address, False))
                keys.add(address.lower())
        for text in changes.remove_addresses:
            key = text.strip().lower()
            match = [p for p in proxies if p.key == key]
            if not match:
                raise NotFoundError(f"{obj.alias} has no address {text!r}")
            if match[0].primary:
                raise InvalidValueError(
                    f"{text} is the primary address of {obj.alias}: set another primary first"
                )
            proxies = [p for p in proxies if p.key != key]
        if changes.primary_address is not None:
            address = str(parse_address(changes.primary_address))
            if address.lower() not in {p.key for p in proxies}:
                proxies.append(Proxy("SMTP", address, False))
            proxies = [
                Proxy(
                    p.type,
                    address if p.key == address.lower() else p.address,
                    p.key == address.lower(),
                )
                if p.type == "SMTP"
                else p
                for p in proxies
            ]
        return [format_proxy(p) for p in proxies]

    def set_members(self, ref: str, add: Sequence[str], remove: Sequence[str]) -> Recipient:
        with self.store.write() as conn:
            group = self._writable(conn, ref, ObjectKind.GROUP)
            members = list(group.members)
            for m in add:
                guid = self._resolve(conn, m).guid
                if guid == group.guid:
                    raise InvalidValueError("a group cannot be a member of itself")
                if guid not in members:
                    members.append(guid)
            for m in remove:
                guid = self._resolve(conn, m).guid
                if guid not in members:
                    raise NotFoundError(f"{m!r} is not a member of {group.alias}")
                members.remove(guid)
            return update_object(
                conn, group, now=self.clock.now(), attrs={**group.attrs, "members": members}
            )

    def member_recipients(self, group: Recipient) -> list[Recipient]:
        if not group.members:
            return []
        with self.store.read() as conn:
            rows = conn.execute(
                select(dir_object).where(
                    dir_object.c.guid.in_(group.members), dir_object.c.is_deleted.is_(False)
                )
            ).all()
        return sorted((row_to_recipient(r) for r in rows), key=lambda r: r.alias)

    def set_password(self, ref: str, password_hash: str) -> None:
        with self.store.write() as conn:
            obj = self._writable(conn, ref, ObjectKind.MAILBOX)
            conn.execute(delete(mailbox_secret).where(mailbox_secret.c.guid == obj.guid))
            conn.execute(insert(mailbox_secret).values(guid=obj.guid, password_hash=password_hash))

    def password_hash(self, guid: str) -> str | None:
        with self.store.read() as conn:
            value = conn.execute(
                select(mailbox_secret.c.password_hash).where(mailbox_secret.c.guid == guid)
            ).scalar_one_or_none()
        return None if value is None else str(value)

    def remove_recipient(self, ref: str, kind: ObjectKind | None = None) -> Recipient:
        """Delete: the object becomes a tombstone (name and guid kept) that replicates."""
        with self.store.write() as conn:
            obj = self._writable(conn, ref, kind)
            promote_held_claims(conn, unindex_proxies(conn, obj.guid))
            conn.execute(delete(mailbox_secret).where(mailbox_secret.c.guid == obj.guid))
            self._drop_from_groups(conn, obj.guid)
            return update_object(
                conn,
                obj,
                now=self.clock.now(),
                # The addresses it gave up: for a while, mail for them waits instead of being
                # refused (the recipient may have moved to another site: routing.router).
                attrs={"deleted_kind": str(obj.kind), "released": [p.address for p in obj.proxies]},
                is_deleted=True,
            )

    def _drop_from_groups(self, conn: Connection, guid: str) -> None:
        rows = conn.execute(
            select(dir_object).where(
                dir_object.c.site == self.local_site,
                dir_object.c.kind == str(ObjectKind.GROUP),
                dir_object.c.is_deleted.is_(False),
            )
        ).all()
        for row in rows:
            group = row_to_recipient(row)
            if guid in group.members:
                members = [m for m in group.members if m != guid]
                update_object(
                    conn, group, now=self.clock.now(), attrs={**group.attrs, "members": members}
                )

    def list_recipients(
        self,
        kind: ObjectKind | None = None,
        *,
        site: str | None = None,
        include_deleted: bool = False,
    ) -> list[Recipient]:
        kinds = [kind] if kind is not None else sorted(RECIPIENT_KINDS)
        query = select(dir_object).where(dir_object.c.kind.in_([str(k) for k in kinds]))
        if site is not None:
            query = query.where(dir_object.c.site == site)
        if not include_deleted:
            query = query.where(dir_object.c.is_deleted.is_(False))
        with self.store.read() as conn:
            rows = conn.execute(query.order_by(dir_object.c.site, dir_object.c.name)).all()
        return [row_to_recipient(r) for r in rows]

    def page_recipients(
        self,
        kind: ObjectKind | None = None,
        *,
        site: str | None = None,
        text: str = "",
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[Recipient], int]:
        """One page of live recipients in (site, name) order, and how many match in all.

        `text` keeps those whose alias or display name contains it, or one of whose
        addresses starts with it (case-insensitive): what an administrator types to find one
        among thousands without the whole directory leaving the database.
        """
        kinds = [kind] if kind is not None else sorted(RECIPIENT_KINDS)
        where: list[ColumnElement[bool]] = [
            dir_object.c.kind.in_([str(k) for k in kinds]),
            dir_object.c.is_deleted.is_(False),
        ]
        if site is not None:
            where.append(dir_object.c.site == site)
        needle = text.strip().lower()
        if needle:
            pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            by_address = select(proxy_address.c.guid).where(
                proxy_address.c.address_key.like(pattern.removeprefix("%") + "%", escape="\\")
            )
            where.append(
                or_(
                    func.lower(dir_object.c.name).like(pattern + "%", escape="\\"),
                    func.lower(dir_object.c.display_name).like(pattern + "%", escape="\\"),
                    dir_object.c.guid.in_(by_address),
                )
            )
        query = select(dir_object).where(*where)
        with self.store.read() as conn:
            total = conn.execute(
                select(func.count()).select_from(dir_object).where(*where)
            ).scalar_one()
            rows = conn.execute(
                query.order_by(dir_object.c.site, dir_object.c.name)
                .offset(max(offset, 0))
                .limit(max(limit, 1))
            ).all()
        return [row_to_recipient(r) for r in rows], int(total)

    # -- the hot path -----------------------------------------------------------------------

    def lookup(self, address: str) -> AddressOwner | None:
        """Who holds `address` anywhere in the organisation (one indexed probe).

        On SQLite the probe goes through `Store.fetch_one` (~20 us, target < 50 us: see
        bench/readdress.py); elsewhere through an ordinary pooled connection.
        """
        if not self.store.is_sqlite:
            with self.store.engine.connect() as conn:
                return self.lookup_in(conn, address)
        if self._lookup_sql is None:
            self._lookup_sql = str(_LOOKUP.compile(dialect=self.store.engine.dialect))
        row = self.store.fetch_one(self._lookup_sql, (address.strip().lower(),))
        if row is None:
            return None
        guid, found, is_primary, kind, site, name = row
        return AddressOwner(Guid(guid), ObjectKind(kind), site, name, found, bool(is_primary))

    @staticmethod
    def lookup_in(conn: Connection, address: str) -> AddressOwner | None:
        row = conn.execute(_LOOKUP, {"key": address.strip().lower()}).first()
        if row is None:
            return None
        return AddressOwner(
            guid=Guid(row.guid),
            kind=ObjectKind(row.kind),
            site=row.site,
            alias=row.name,
            address=row.address,
            is_primary=row.is_primary,
        )

    def accepted_domains(self) -> frozenset[str]:
        """Domains the organisation accepts mail for: every proxy and template domain, and
        every site's accepted domains (authoritative or internal relay)."""
        with self.store.read() as conn:
            domains = {r[0] for r in conn.execute(select(proxy_address.c.domain).distinct())}
            domains.update(
                r[0].lower()
                for r in conn.execute(
                    select(dir_object.c.name).where(
                        dir_object.c.kind == str(ObjectKind.DOMAIN),
                        dir_object.c.is_deleted.is_(False),
                    )
                )
            )
            rows = conn.execute(
                select(dir_object.c.attrs).where(
                    dir_object.c.kind == str(ObjectKind.SITE_ADDRESSING),
                    dir_object.c.is_deleted.is_(False),
                )
            ).all()
        for row in rows:  # .get: a replica from an older or faulty peer must not stop routing
            template = row.attrs.get("smtp") if isinstance(row.attrs, dict) else None
            if isinstance(template, str) and "@" in template:
                domains.add(template.rpartition("@")[2].lower())
        return frozenset(domains)


_SITES = select(dir_object.c.site).where(dir_object.c.kind == str(ObjectKind.SITE)).subquery()
_HELD = dir_object.alias("held")
_VERSION = select(
    func.sum(
        select(func.max(_HELD.c.usn_changed))
        .where(_HELD.c.site == _SITES.c.site)
        .correlate(_SITES)
        .scalar_subquery()
    )
).select_from(_SITES)
_LOOKUP = (
    select(
        proxy_address.c.guid,
        proxy_address.c.address,
        proxy_address.c.is_primary,
        dir_object.c.kind,
        dir_object.c.site,
        dir_object.c.name,
    )
    .join(dir_object, dir_object.c.guid == proxy_address.c.guid)
    .where(proxy_address.c.address_key == bindparam("key"))
)


@dataclass(frozen=True, slots=True)
class AddressingResult:
    """What `set_addressing` did (or, for a dry run, would do)."""

    old_template: str
    new_template: str
    plan: ReaddressPlan | None  # None when recipients are not updated
    applied: bool
    updated: int


def set_addressing(
    directory: Directory,
    template_text: str,
    *,
    update_recipients: bool,
    drop_old: bool = False,
    dry_run: bool = False,
    progress_total: Callable[[int], Callable[[int], None] | None] | None = None,
) -> AddressingResult:
    """Change this site's SMTP template; optionally re-address every recipient of the site.

    The template change and the re-addressing commit in one transaction: either every
    recipient has its new address or nothing changed. `progress_total(n)` is called with the
    number of recipients to write and may return a per-batch progress callback.
    """
    template = parse_template(template_text)
    site = directory.local_site
    # Re-addressing writes only guids it read from dir_object in this transaction, and deletes
    # no object: SQLite's parent lookup per new index row would find every one.
    with directory.store.write(check_foreign_keys=not update_recipients) as conn:
        old = str(directory.addressing_object(conn, site).attrs["smtp"])
        plan = (
            plan_readdress(conn, site, template, drop_old=drop_old) if update_recipients else None
        )
        if dry_run:
            conn.rollback()
            return AddressingResult(old, str(template), plan, applied=False, updated=0)
        directory.store_template(conn, template)
        updated = 0
        if plan is not None:
            progress = progress_total(plan.changed_count) if progress_total else None
            updated = apply_readdress(conn, site, plan, directory.clock.now(), progress)
    return AddressingResult(old, str(template), plan, applied=True, updated=updated)


_BY_GUID = select(dir_object).where(dir_object.c.guid == bindparam("b_guid"))


def _insert_server(
    conn: Connection, site: str, server: str, listen: Sequence[str], now: float
) -> None:
    insert_object(
        conn,
        site=site,
        kind=ObjectKind.SERVER,
        name=server,
        display_name=server,
        attrs={"listen": list(listen)},
        now=now,
    )
