"""Low-level reads and writes of directory objects inside one transaction.

One job: the SQL for `dir_object`, `proxy_address` and `site_usn`, so the service code above
it speaks in recipients and never in rows. Invariants kept here: every write of an object takes
a fresh USN from its owning site's counter and bumps its version; the proxy index always equals
the live objects' proxy lists.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from sitemail.core.errors import DuplicateAddressError
from sitemail.directory.model import (
    Guid,
    ObjectKind,
    Proxy,
    Recipient,
    parse_proxy,
    split_proxy,
)
from sitemail.store.tables import dir_object, proxy_address, proxy_conflict, site_usn

__all__ = [
    "allocate_usns",
    "index_proxies",
    "insert_object",
    "new_guid",
    "promote_held_claims",
    "proxy_text_rows",
    "row_to_recipient",
    "unindex_proxies",
    "update_object",
]


class _GuidClock:
    """Milliseconds and a 12-bit counter for UUIDv7, never repeating or going back in this
    process (RFC 9562 section 6.2, method 1; a full counter carries into the milliseconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> int:
        with self._lock:
            self._last = max(time.time_ns() // 1_000_000 << 12, self._last + 1)
            return self._last


_GUID_CLOCK = _GuidClock()


def new_guid() -> Guid:
    """A UUID version 7 (RFC 9562): Unix milliseconds first, then a counter and 62 random bits.

    Time-ordered on purpose: objects are created, and replicated, roughly in that order, so
    their keys land at the end of the guid indexes (`dir_object`'s and `proxy_address`'s)
    instead of on a random page each. With 100,000 random guids an answer of 512 objects
    dirtied some 400 index pages per index, each written to the WAL, synced and checkpointed.
    Uniqueness is that of UUIDv4 within a millisecond and counter value: 62 random bits.
    """
    stamp = _GUID_CLOCK.next()
    random = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    value = (stamp >> 12) << 80 | 0x7 << 76 | (stamp & 0xFFF) << 64 | 0b10 << 62 | random
    return Guid(str(uuid.UUID(int=value)))


def allocate_usns(conn: Connection, site: str, count: int = 1) -> int:
    """Reserve `count` consecutive USNs of `site`; returns the first. Monotonic, never reused."""
    result = conn.execute(
        update(site_usn)
        .where(site_usn.c.site == site)
        .values(usn=site_usn.c.usn + count)
        .returning(site_usn.c.usn)
    ).scalar_one_or_none()
    if result is None:
        conn.execute(insert(site_usn).values(site=site, usn=count))
        return 1
    return int(result) - count + 1


def row_to_recipient(row: Any) -> Recipient:
    return Recipient(
        guid=Guid(row.guid),
        site=row.site,
        kind=ObjectKind(row.kind),
        alias=row.name,
        display_name=row.display_name,
        attrs=dict(row.attrs),
        usn_changed=row.usn_changed,
        version=row.version,
        is_deleted=row.is_deleted,
    )


def insert_object(
    conn: Connection,
    *,
    site: str,
    kind: ObjectKind,
    name: str,
    display_name: str,
    attrs: dict[str, Any],
    now: float,
    guid: Guid | None = None,
) -> Recipient:
    usn = allocate_usns(conn, site)
    guid = guid or new_guid()
    conn.execute(
        insert(dir_object).values(
            guid=guid,
            site=site,
            kind=str(kind),
            name=name,
            display_name=display_name,
            attrs=attrs,
            usn_created=usn,
            usn_changed=usn,
            version=1,
            is_deleted=False,
            changed_at=now,
        )
    )
    return Recipient(guid, site, kind, name, display_name, attrs, usn, 1, False)


def update_object(
    conn: Connection,
    obj: Recipient,
    *,
    now: float,
    attrs: dict[str, Any] | None = None,
    display_name: str | None = None,
    is_deleted: bool | None = None,
) -> Recipient:
    usn = allocate_usns(conn, obj.site)
    values: dict[str, Any] = {
        "usn_changed": usn,
        "version": obj.version + 1,
        "changed_at": now,
    }
    if attrs is not None:
        values["attrs"] = attrs
    if display_name is not None:
        values["display_name"] = display_name
    if is_deleted is not None:
        values["is_deleted"] = is_deleted
    conn.execute(update(dir_object).where(dir_object.c.guid == obj.guid).values(**values))
    return Recipient(
        guid=obj.guid,
        site=obj.site,
        kind=obj.kind,
        alias=obj.alias,
        display_name=display_name if display_name is not None else obj.display_name,
        attrs=attrs if attrs is not None else obj.attrs,
        usn_changed=usn,
        version=obj.version + 1,
        is_deleted=is_deleted if is_deleted is not None else obj.is_deleted,
    )


def proxy_rows(guid: str, proxies: Iterable[Proxy]) -> list[dict[str, Any]]:
    return [_proxy_row(guid, p.type, p.address, p.primary) for p in proxies]


def proxy_text_rows(guid: str, texts: Iterable[str]) -> list[dict[str, Any]]:
    """`proxy_rows` of proxy texts (`SMTP:a@b`) without a `Proxy` made per address: a full
    replication pull indexes 100,000 of them, and the object costs more than the row."""
    return [_proxy_row(guid, *split_proxy(text)) for text in texts]


def _proxy_row(guid: str, kind: str, address: str, primary: bool) -> dict[str, Any]:
    return {
        "address_key": address.lower(),  # Proxy.key
        "address": address,
        "domain": address.rpartition("@")[2].lower(),
        "guid": guid,
        "type": kind,
        "is_primary": primary,
    }


def owners_of(conn: Connection, keys: Sequence[str]) -> dict[str, str]:
    """Which guid holds each of these address keys (absent keys are free)."""
    if not keys:
        return {}
    rows = conn.execute(
        select(proxy_address.c.address_key, proxy_address.c.guid).where(
            proxy_address.c.address_key.in_(list(keys))
        )
    )
    return {r.address_key: r.guid for r in rows}


def index_proxies(conn: Connection, guid: str, proxies: Sequence[str]) -> None:
    """Add an object's proxies to the index; a clash is a `DuplicateAddressError`."""
    parsed = [parse_proxy(p) for p in proxies]
    taken = {k: g for k, g in owners_of(conn, [p.key for p in parsed]).items() if g != guid}
    if taken:
        raise DuplicateAddressError(
            "address already in use in the organisation: " + ", ".join(sorted(taken))
        )
    rows = proxy_rows(guid, parsed)
    if rows:
        try:
            conn.execute(insert(proxy_address), rows)
        except IntegrityError as exc:  # the same address twice in one list
            raise DuplicateAddressError(f"duplicate address in {proxies}") from exc


def unindex_proxies(conn: Connection, guid: str) -> set[str]:
    """Drop `guid`'s addresses (held and losing claims) from the index; returns the keys it
    held, which the caller frees with `promote_held_claims` once it knows which it keeps."""
    released = {
        str(r[0])
        for r in conn.execute(
            select(proxy_address.c.address_key).where(proxy_address.c.guid == guid)
        )
    }
    conn.execute(delete(proxy_address).where(proxy_address.c.guid == guid))
    conn.execute(delete(proxy_conflict).where(proxy_conflict.c.guid == guid))
    return released


def promote_held_claims(conn: Connection, keys: Iterable[str]) -> None:
    """Each freed address goes to the lowest-guid claim replication held back for it (two
    sites gave the same address before they saw each other's: seed F6), so deleting one
    claimant routes the address to the other instead of refusing it as unknown."""
    for key in sorted(keys):
        row = conn.execute(
            select(proxy_conflict)
            .where(proxy_conflict.c.address_key == key)
            .order_by(proxy_conflict.c.guid)
            .limit(1)
        ).first()
        if row is None:
            continue
        values = row._asdict()
        conn.execute(
            delete(proxy_conflict).where(
                proxy_conflict.c.address_key == key, proxy_conflict.c.guid == values["guid"]
            )
        )
        conn.execute(insert(proxy_address).values(**values))
