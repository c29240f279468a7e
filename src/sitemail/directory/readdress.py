"""Changing Site Addressing and re-addressing every recipient of the site.

One job: `plan_readdress` computes, without writing, the new primary SMTP address of every live
recipient of this site under a new template (the dry-run diff), resolving collisions across the
organisation by appending a counter (`jsmith2`); `apply_readdress` writes a plan in bulk: new
primary, old primary kept as a secondary unless `drop_old`, one USN each, index rebuilt. It is
built for 100,000 recipients in seconds: one read of the address index, set arithmetic in
memory, and batched writes.

Better than Exchange 5.5 (KB Q291086): the old primary is kept by default, so mail to it still
arrives; an address the recipient already holds as a secondary is promoted (KB Q196421).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from sitemail.directory.addressing import AddressFields, Template
from sitemail.directory.model import (
    RECIPIENT_KINDS,
    Proxy,
    Recipient,
    format_proxy,
    parse_proxy,
)
from sitemail.directory.objects import allocate_usns, proxy_rows, row_to_recipient
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
    rows = conn.execute(
        select(dir_object)
        .where(
            dir_object.c.site == site,
            dir_object.c.kind.in_([str(k) for k in RECIPIENT_KINDS]),
            dir_object.c.is_deleted.is_(False),
        )
        .order_by(dir_object.c.usn_created)
    )
    for row in rows:
        yield row_to_recipient(row)


def _holders(conn: Connection) -> dict[str, str]:
    """Every address key in the organisation -> holder guid (one pass over the index)."""
    return dict(
        conn.execute(select(proxy_address.c.address_key, proxy_address.c.guid)).tuples().all()
    )


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
    holders = _holders(conn)
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
            given = f"{local}{counter}@{template.domain}"
        if given != wanted:
            holder = _describe(conn, holders[wanted.lower()])
            plan.collisions.append(Collision(recipient.alias, wanted, given, holder))
        holders[given.lower()] = recipient.guid  # taken for the recipients after this one
        plan.changes.append(_readdress(recipient, given, drop_old))
    return plan


def _readdress(recipient: Recipient, new_primary: str, drop_old: bool) -> Readdress:
    old = recipient.proxies
    old_primary = next((p.address for p in old if p.type == "SMTP" and p.primary), "")
    new_key = new_primary.lower()
    proxies = [Proxy("SMTP", new_primary, True)]
    for proxy in old:
        if proxy.key == new_key:
            continue  # promoted (or unchanged)
        if proxy.type == "SMTP" and proxy.primary:
            if not drop_old:
                proxies.append(Proxy("SMTP", proxy.address, False))
            continue
        proxies.append(proxy)
    return Readdress(recipient, old_primary, new_primary, [format_proxy(p) for p in proxies])


def apply_readdress(
    conn: Connection, site: str, plan: ReaddressPlan, now: float, progress: Progress | None = None
) -> int:
    """Write the plan in batches; returns how many recipients changed."""
    changed = plan.changed
    if not changed:
        return 0
    first_usn = allocate_usns(conn, site, len(changed))
    for start in range(0, len(changed), _BATCH):
        batch = changed[start : start + _BATCH]
        _write_batch(conn, batch, first_usn + start, now)
        if progress is not None:
            progress(len(batch))
    return len(changed)


def _write_batch(conn: Connection, batch: Sequence[Readdress], first_usn: int, now: float) -> None:
    guids = [c.recipient.guid for c in batch]
    conn.execute(delete(proxy_address).where(proxy_address.c.guid.in_(guids)))
    updates: list[dict[str, Any]] = []
    proxies: list[dict[str, Any]] = []
    for offset, change in enumerate(batch):
        recipient = change.recipient
        updates.append(
            {
                "b_guid": recipient.guid,
                "attrs": {**recipient.attrs, "proxies": change.new_proxies},
                "usn_changed": first_usn + offset,
                "version": recipient.version + 1,
                "changed_at": now,
            }
        )
        proxies.extend(proxy_rows(recipient.guid, _parse_all(change.new_proxies)))
    conn.execute(_UPDATE, updates)
    conn.execute(insert(proxy_address), proxies)


def _parse_all(proxies: list[str]) -> list[Proxy]:
    return [parse_proxy(p) for p in proxies]


_UPDATE = (
    update(dir_object)
    .where(dir_object.c.guid == bindparam("b_guid"))
    .values(
        attrs=bindparam("attrs"),
        usn_changed=bindparam("usn_changed"),
        version=bindparam("version"),
        changed_at=bindparam("changed_at"),
    )
)
