"""Tombstone collection: old enough and passed by every partner, never earlier."""

from __future__ import annotations

from sqlalchemy import select

from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind
from sitemail.replication import state
from sitemail.replication.tombstones import collect_tombstones
from sitemail.store.tables import dir_object


def tombstones(service: AdminService) -> list[str]:
    with service.store.read() as conn:
        rows = conn.execute(select(dir_object.c.name).where(dir_object.c.is_deleted.is_(True)))
        return sorted(r.name for r in rows)


def test_tombstones_wait_for_every_partner_and_the_lifetime(site_a: AdminService) -> None:
    """A tombstone goes only when old enough and every partner pulling SiteA has passed it."""
    site_a.add_recipient(ObjectKind.MAILBOX, "gone", display_name="Gone")
    removed = site_a.remove_recipient("gone")
    later = 10.0**10  # "older than this" holds for a tombstone made just now
    with site_a.store.write() as conn:
        state.bump_link(conn, "SiteB", "SiteA", applied=0, peer_watermark=removed.usn_changed - 1)
        assert collect_tombstones(conn, partners=["SiteB"], older_than=later) == {}
    assert tombstones(site_a) == ["gone"]
    with site_a.store.write() as conn:
        state.bump_link(conn, "SiteB", "SiteA", applied=0, peer_watermark=removed.usn_changed)
        assert collect_tombstones(conn, partners=["SiteB"], older_than=0) == {}  # too young
        assert collect_tombstones(conn, partners=["SiteB"], older_than=later) == {"SiteA": 1}
    assert tombstones(site_a) == []
