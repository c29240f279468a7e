"""One owner for an address at every site: the losing site moves its claim aside.

One job: apply the consequence of the organisation's one address-claim rule at the site whose
object lost. The rule (replication.apply's `_claim`, `promote_held_claims`): when two objects
claim one address (two sites gave it before they saw each other's), the object with the
lowest guid holds it, at every site and whatever the order replication brought them in.
Guids are UUIDv7, so the lowest is the object created first (by its site's clock), then the
lower random part. The other claim waits in `proxy_conflict`. Its site, the only writer of
that object, then gives the object a free numbered address instead (`jsmith2@example.com`,
keeping whether it was the primary) and records the move in the object (`moved_aside`, which
replicates, so the KCC at every site reports it); the change replicates and the conflict
disappears everywhere without an admin.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, or_, select

from sitemail.directory.addressing import parse_template
from sitemail.directory.model import Proxy, format_proxy, split_proxy
from sitemail.directory.objects import (
    index_proxies,
    row_to_recipient,
    unindex_proxies,
    update_object,
)
from sitemail.store.tables import dir_object, proxy_address, proxy_conflict

__all__ = ["MovedAside", "free_numbered", "move_aside_lost_claims"]

_KEEP_MOVES = 10  # moves remembered per object (the KCC shows the recent ones)


@dataclass(frozen=True, slots=True)
class MovedAside:
    alias: str
    address: str  # the address given up
    given: str  # the address the object holds instead
    held_by: str  # "Site/alias" of the object that keeps the address


def free_numbered(conn: Connection, address: str, also_taken: Sequence[str] = ()) -> str:
    """`address` with the first counter from 2 (`jsmith2@...`) that no object claims."""
    local, _, domain = address.rpartition("@")
    template = parse_template(f"@{domain}")
    counter = 2
    while True:
        candidate = template.numbered(local, counter)
        if candidate.lower() not in {a.lower() for a in also_taken} and not _claimed(
            conn, candidate.lower()
        ):
            return candidate
        counter += 1


def _claimed(conn: Connection, key: str) -> bool:
    held = conn.execute(
        select(proxy_address.c.guid).where(proxy_address.c.address_key == key)
    ).first()
    waiting = conn.execute(
        select(proxy_conflict.c.guid).where(proxy_conflict.c.address_key == key)
    ).first()
    return held is not None or waiting is not None


def move_aside_lost_claims(conn: Connection, local_site: str, now: float) -> list[MovedAside]:
    """Give each live object of `local_site` that lost an address a numbered one instead."""
    lost = conn.execute(
        select(proxy_conflict.c.guid, proxy_conflict.c.address_key, proxy_conflict.c.address)
        .join(dir_object, dir_object.c.guid == proxy_conflict.c.guid)
        .where(dir_object.c.site == local_site, dir_object.c.is_deleted.is_(False))
        .order_by(proxy_conflict.c.guid, proxy_conflict.c.address_key)
    ).all()
    by_guid: dict[str, list[Any]] = defaultdict(list)
    for row in lost:
        by_guid[row.guid].append(row)
    moved: list[MovedAside] = []
    for guid, rows in by_guid.items():
        moved.extend(_move_aside(conn, guid, rows, now))
    return moved


def _move_aside(conn: Connection, guid: str, rows: Sequence[Any], now: float) -> list[MovedAside]:
    obj = row_to_recipient(conn.execute(select(dir_object).where(dir_object.c.guid == guid)).one())
    given: dict[str, str] = {}
    for row in rows:
        given[row.address_key] = free_numbered(conn, row.address, list(given.values()))
    proxies = []
    for text in obj.attrs.get("proxies", []):
        kind, address, primary = split_proxy(str(text))
        proxies.append(format_proxy(Proxy(kind, given.get(address.lower(), address), primary)))
    winners = _holders(conn, list(given))
    moves = [
        MovedAside(
            obj.alias, row.address, given[row.address_key], winners.get(row.address_key, "?")
        )
        for row in rows
    ]
    history = list(obj.attrs.get("moved_aside", []))
    history += [
        {"address": m.address, "to": m.given, "held_by": m.held_by, "at": now} for m in moves
    ]
    unindex_proxies(conn, guid)  # its index rows and its losing claims; the kept ones return
    index_proxies(conn, guid, proxies)
    attrs = {**obj.attrs, "proxies": proxies, "moved_aside": history[-_KEEP_MOVES:]}
    update_object(conn, obj, now=now, attrs=attrs)
    return moves


def _holders(conn: Connection, keys: Sequence[str]) -> dict[str, str]:
    rows = conn.execute(
        select(proxy_address.c.address_key, dir_object.c.site, dir_object.c.name)
        .join(dir_object, dir_object.c.guid == proxy_address.c.guid)
        .where(or_(*(proxy_address.c.address_key == k for k in keys)))
    ).all()
    return {r.address_key: f"{r.site}/{r.name}" for r in rows}
