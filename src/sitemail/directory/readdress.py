"""Changing Site Addressing and re-addressing every recipient of the site.

One job: `plan_readdress` computes, without writing, the new primary SMTP address of every live
recipient of this site under a new template (the dry-run diff), resolving collisions across the
organisation by appending a counter (`jsmith2`); `apply_readdress` writes a plan in bulk: new
primary, old primary kept as a secondary unless `drop_old`, one USN each, index updated. It is
built for 100,000 recipients in seconds (bench/readdress.py): one read of the index entries in
the template's domain (the only ones a new address can clash with), set arithmetic in memory,
and batched writes that touch only the index rows that change.

Better than Exchange 5.5 (KB Q291086): the old primary is kept by default, so mail to it still
arrives; an address the recipient already holds as a secondary is promoted (KB Q196421).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.sql.dml import UpdateBase

from sitemail.directory.addressing import AddressFields, Template
from sitemail.directory.model import (
    RECIPIENT_KINDS,
    Guid,
    Recipient,
    format_proxy,
    parse_proxy,
)
from sitemail.directory.objects import allocate_usns
from sitemail.store.tables import dir_object, proxy_address

__all__ = ["Collision", "Readdress", "ReaddressPlan", "apply_readdress", "plan_readdress"]

_BATCH = 2000
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Collision:
    alias: str
    wanted: str
    given: str
    held_by: str  # "alias (site)" of the recipient that holds the wanted address


@dataclass(frozen=True, slots=True)
class Readdress:
    recipient: Recipient
    old_primary: str
    new_primary: str
    new_proxies: list[str]
    promoted: bool = False  # the new primary was already one of the recipient's addresses
    released: tuple[str, ...] = ()  # keys of old primaries given up (drop_old)

    @property
    def changed(self) -> bool:
        return bool(self.new_proxies != self.recipient.attrs.get("proxies", []))


@dataclass(slots=True)
class ReaddressPlan:
    template: Template
    drop_old: bool
    changes: list[Readdress] = field(default_factory=list)
    collisions: list[Collision] = field(default_factory=list)

    @property
    def changed(self) -> list[Readdress]:
        return [c for c in self.changes if c.changed]


def _live_recipients(conn: Connection, site: str) -> Iterator[Recipient]:
    c = dir_object.c
    rows = conn.execute(
        select(c.guid, c.kind, c.name, c.display_name, c.attrs, c.usn_changed, c.version)
        .where(
            c.site == site,
            c.kind.in_([str(k) for k in RECIPIENT_KINDS]),
            c.is_deleted.is_(False),
        )
        .order_by(c.usn_created)
    )
    kinds = {str(k): k for k in RECIPIENT_KINDS}
    for guid, kind, name, display_name, attrs, usn, version in rows:
        yield Recipient(Guid(guid), site, kinds[kind], name, display_name, attrs, usn, version)


def _holders(conn: Connection, domain: str) -> dict[str, str]:
    """Address key -> holder guid for every address in `domain`, the template's domain: every
    address the plan hands out is in it, so no other address can clash (one indexed read)."""
    rows = conn.execute(
        select(proxy_address.c.address_key, proxy_address.c.guid).where(
            proxy_address.c.domain == domain
        )
    )
    return dict(rows.all())


def _describe(conn: Connection, guid: str) -> str:
    row = conn.execute(
        select(dir_object.c.name, dir_object.c.site).where(dir_object.c.guid == guid)
    ).first()
    return f"{row.name} ({row.site})" if row is not None else guid


def plan_readdress(
    conn: Connection, site: str, template: Template, *, drop_old: bool
) -> ReaddressPlan:
    """Compute the new addresses of every live recipient of `site`; writes nothing."""
    plan = ReaddressPlan(template=template, drop_old=drop_old)
    holders = _holders(conn, template.domain)
    recipients = list(_live_recipients(conn, site))
    if drop_old:  # old primaries are released by this run, so they are free to be reused
        for recipient in recipients:
            for proxy in recipient.proxies:
                if proxy.type == "SMTP" and proxy.primary:
                    holders.pop(proxy.key, None)
    for recipient in recipients:
        fields = AddressFields(
            recipient.alias,
            recipient.given_name,
            recipient.surname,
            recipient.initials,
            recipient.display_name,
        )
        local = template.local_part(fields)
        wanted = f"{local}@{template.domain}"
        given, counter = wanted, 1
        while holders.get(given.lower(), recipient.guid) != recipient.guid:
            counter += 1
            given = template.numbered(local, counter)
        if given != wanted:
            holder = _describe(conn, holders[wanted.lower()])
            plan.collisions.append(Collision(recipient.alias, wanted, given, holder))
        holders[given.lower()] = recipient.guid  # taken for the recipients after this one
        plan.changes.append(_readdress(recipient, given, drop_old))
    return plan


def _readdress(recipient: Recipient, new_primary: str, drop_old: bool) -> Readdress:
    # Plain string work on `SMTP:addr` / `smtp:addr` entries: this runs once per recipient.
    new_key = new_primary.lower()
    proxies = [f"SMTP:{new_primary}"]
    old_primary, promoted = "", False
    released: tuple[str, ...] = ()
    for text in recipient.attrs.get("proxies", []):
        prefix, _, address = text.partition(":")
        key = address.lower()
        if prefix == "SMTP" and not old_primary:
            old_primary = address
        if key == new_key:
            promoted = True  # promoted (or unchanged)
        elif prefix == "SMTP":  # the old primary
            if drop_old:
                released = (*released, key)
            else:
                proxies.append(f"smtp:{address}")
        else:
            proxies.append(text if prefix == "smtp" else format_proxy(parse_proxy(text)))
    return Readdress(recipient, old_primary, new_primary, proxies, promoted, released)


def apply_readdress(
    conn: Connection, site: str, plan: ReaddressPlan, now: float, progress: Progress | None = None
) -> int:
    """Write the plan in batches; returns how many recipients changed.

    The index is updated, not rebuilt. Released old primaries (drop_old) are deleted first, all
    of them, since an address one recipient gives up may go to another in an earlier batch.
    Then per batch: the SMTP primaries of its recipients are demoted in one statement, each new
    primary is inserted (or, held already, promoted in place), and the objects are rewritten
    with consecutive USNs. Secondaries that stay are not touched.
    """
    changed = plan.changed
    if not changed:
        return 0
    first_usn = allocate_usns(conn, site, len(changed))
    released = [{"b_key": key} for c in changed for key in c.released]
    for start in range(0, len(released), _BATCH):
        _executemany(conn, _DELETE_PROXY, released[start : start + _BATCH])
    for start in range(0, len(changed), _BATCH):
        batch = changed[start : start + _BATCH]
        _write_batch(conn, batch, first_usn + start, now)
        if progress is not None:
            progress(len(batch))
    return len(changed)


def _write_batch(conn: Connection, batch: Sequence[Readdress], first_usn: int, now: float) -> None:
    objects: list[dict[str, Any]] = []
    promoted: list[dict[str, Any]] = []
    added: list[dict[str, Any]] = []
    for offset, change in enumerate(batch):
        recipient = change.recipient
        address = change.new_primary
        key = address.lower()
        objects.append(
            {
                "b_guid": recipient.guid,
                "attrs": {**recipient.attrs, "proxies": change.new_proxies},
                "usn_changed": first_usn + offset,
                "version": recipient.version + 1,
                "changed_at": now,
            }
        )
        if change.promoted:
            promoted.append({"b_key": key, "address": address, "is_primary": True})
        else:
            added.append(
                {
                    "address_key": key,
                    "address": address,
                    "domain": address.rpartition("@")[2].lower(),
                    "guid": recipient.guid,
                    "type": "SMTP",
                    "is_primary": True,
                }
            )
    conn.execute(_DEMOTE, {"guids": [c.recipient.guid for c in batch]})
    _executemany(conn, _PROMOTE, promoted)
    _executemany(conn, insert(proxy_address), added)
    _executemany(conn, _UPDATE_OBJECT, objects, json_columns=("attrs",))


def _executemany(
    conn: Connection,
    statement: UpdateBase,
    rows: Sequence[dict[str, Any]],
    json_columns: Sequence[str] = (),
) -> None:
    """Run `statement` once per row of parameters (the rows are consumed: JSON may be encoded
    in place).

    On SQLite the rows go straight to the DBAPI's executemany: at 100,000 rows SQLAlchemy's
    per-row parameter processing costs more than SQLite's own work. Other databases take the
    ordinary path (which also serialises JSON and adapts types for their driver).
    """
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        conn.execute(statement, list(rows))
        return
    compiled = statement.compile(dialect=conn.dialect)
    names = compiled.positiontup or []
    for row in rows:
        for name in json_columns:
            row[name] = json.dumps(row[name])
    params: list[tuple[Any, ...]]
    if len(names) == 1:
        params = [(row[names[0]],) for row in rows]
    else:
        params = list(map(itemgetter(*names), rows))
    conn.exec_driver_sql(str(compiled), params)


_UPDATE_OBJECT = (
    update(dir_object)
    .where(dir_object.c.guid == bindparam("b_guid"))
    .values(
        attrs=bindparam("attrs"),
        usn_changed=bindparam("usn_changed"),
        version=bindparam("version"),
        changed_at=bindparam("changed_at"),
    )
)
_DEMOTE = (
    update(proxy_address)
    .where(
        proxy_address.c.guid.in_(bindparam("guids", expanding=True)),
        proxy_address.c.type == "SMTP",
        proxy_address.c.is_primary.is_(True),
    )
    .values(is_primary=False)
)
_PROMOTE = (
    update(proxy_address)
    .where(proxy_address.c.address_key == bindparam("b_key"))
    .values(address=bindparam("address"), is_primary=bindparam("is_primary"))
)
_DELETE_PROXY = delete(proxy_address).where(proxy_address.c.address_key == bindparam("b_key"))
