"""Forgetting a removed site: its replica here, and every replication record about it.

One job: when the admin removes a site from the organisation (`sitemail site remove`, run at
each remaining site), delete that site's naming context from this site's directory (its
objects and their proxy addresses, physically: the owner is gone, so no tombstone of it will
ever come) and the replication state kept for it (watermark, peer and link rows, a pending
request), in the caller's transaction. Addresses a remaining site's object had claimed in
vain go to that claimant (the one address-claim rule of directory.objects).

The names of removed sites are kept in this site's own site object (`removed_sites`, which
replicates like any attribute): requests leave them out and answers carrying them are not
applied, so a remaining site that still holds the replica cannot hand it back, and a message
signed by the removed site is refused as from an unknown partner (its key is gone with its
site object and its connector). A new connector to that name takes it off the list.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, or_, select

from sitemail.directory import Directory, ObjectKind
from sitemail.directory.objects import promote_held_claims
from sitemail.store.tables import (
    dir_object,
    proxy_address,
    repl_link,
    repl_peer,
    repl_pending,
    repl_watermark,
)

__all__ = [
    "REMOVED_SITES",
    "Forgotten",
    "count_replica",
    "forget_site",
    "readmit",
    "removed_sites",
]

REMOVED_SITES = "removed_sites"  # the attribute of the local site object


@dataclass(frozen=True, slots=True)
class Forgotten:
    objects: int  # directory objects of its naming context (tombstones included)
    addresses: int  # proxy addresses they held in the index


def count_replica(conn: Connection, site: str) -> Forgotten:
    """What `forget_site` would delete (for --dry-run)."""
    objects = conn.execute(
        select(func.count()).select_from(dir_object).where(dir_object.c.site == site)
    ).scalar_one()
    addresses = conn.execute(
        select(func.count())
        .select_from(proxy_address.join(dir_object, proxy_address.c.guid == dir_object.c.guid))
        .where(dir_object.c.site == site)
    ).scalar_one()
    return Forgotten(int(objects), int(addresses))


def forget_site(conn: Connection, site: str) -> Forgotten:
    """Delete `site`'s replica and replication records here (never the local site's)."""
    counted = count_replica(conn, site)
    keys = [
        r[0]
        for r in conn.execute(
            select(proxy_address.c.address_key)
            .join(dir_object, proxy_address.c.guid == dir_object.c.guid)
            .where(dir_object.c.site == site)
        )
    ]
    conn.execute(delete(dir_object).where(dir_object.c.site == site))  # cascades the index
    promote_held_claims(conn, keys)
    conn.execute(delete(repl_watermark).where(repl_watermark.c.nc == site))
    conn.execute(delete(repl_link).where(or_(repl_link.c.peer == site, repl_link.c.nc == site)))
    conn.execute(delete(repl_peer).where(repl_peer.c.peer == site))
    conn.execute(delete(repl_pending).where(repl_pending.c.origin == site))
    return counted


def removed_sites(conn: Connection, local_site: str) -> set[str]:
    """The sites removed here (read from the local site object)."""
    attrs = conn.execute(
        select(dir_object.c.attrs).where(
            dir_object.c.site == local_site,
            dir_object.c.kind == str(ObjectKind.SITE),
            dir_object.c.is_deleted.is_(False),
        )
    ).scalar()
    names = attrs.get(REMOVED_SITES, []) if isinstance(attrs, dict) else []
    return {str(n) for n in names} if isinstance(names, list) else set()


def readmit(directory: Directory, site: str) -> None:
    """A new connector to a removed site's name takes that name off the removed list (a
    site set up again under the old name is pulled like any other)."""
    with directory.store.read() as conn:
        names = removed_sites(conn, directory.local_site)
    if site in names:
        directory.update_site_attrs(**{REMOVED_SITES: sorted(names - {site})})
