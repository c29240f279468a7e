"""The replication bookkeeping's statements (built once, bound per call) on a real store."""

from __future__ import annotations

from sitemail.admin.service import AdminService
from sitemail.replication import state


def test_sequence_counts_up_from_one(site_a: AdminService) -> None:
    with site_a.store.write() as conn:
        first = state.next_seq(conn)
        second = state.next_seq(conn)
    with site_a.store.write() as conn:
        third = state.next_seq(conn)
    assert (second, third) == (first + 1, first + 2)


def test_peer_row_is_made_on_first_update_then_set_and_bumped(site_a: AdminService) -> None:
    with site_a.store.write() as conn:
        state.update_peer(conn, "SiteB", last_answer_at=5.0, bump={"answers_received": 1})
        state.update_peer(conn, "SiteB", bump={"answers_received": 2, "objects_applied": 7})
        state.update_peer(conn, "SiteC", outstanding_seq=9, outstanding_at=6.0)
        b, c = state.get_peer(conn, "SiteB"), state.get_peer(conn, "SiteC")
    assert (b.last_answer_at, b.answers_received, b.objects_applied) == (5.0, 3, 7)
    assert b.outstanding_seq is None
    assert (c.outstanding_seq, c.outstanding_at, c.answers_received) == (9, 6.0, 0)


def test_link_counts_add_up_per_peer_and_naming_context(site_a: AdminService) -> None:
    with site_a.store.write() as conn:
        state.bump_link(conn, "SiteB", "SiteB", applied=3, peer_high=10)
        state.bump_link(conn, "SiteB", "SiteB", applied=4, last_answer_at=2.0)
        state.bump_link(conn, "SiteB", "SiteC", applied=1)
        rows = {
            (r.peer, r.nc): (r.objects_applied, r.peer_high, r.last_answer_at)
            for r in conn.exec_driver_sql("SELECT * FROM repl_link")
        }
    assert rows == {("SiteB", "SiteB"): (7, 10, 2.0), ("SiteB", "SiteC"): (1, None, None)}


def test_watermark_is_made_then_moved(site_a: AdminService) -> None:
    with site_a.store.write() as conn:
        state.set_watermark(conn, "SiteB", 10)
        state.set_watermark(conn, "SiteC", 4)
        state.set_watermark(conn, "SiteB", 12)
        assert state.watermarks(conn) == {"SiteB": 12, "SiteC": 4}


def test_freshness_caught_up_at_the_last_request_of_a_complete_exchange(
    site_a: AdminService,
) -> None:
    """A complete exchange makes its naming contexts current as of its last request; one in
    progress, or a peer holding more than we have, makes them behind."""
    with site_a.store.write() as conn:
        state.update_peer(conn, "SiteB", last_request_at=100.0, last_complete_at=101.0)
        state.bump_link(conn, "SiteB", "SiteB", applied=3, peer_high=7)
        state.bump_link(conn, "SiteB", "SiteD", applied=1, peer_high=2)
        state.set_watermark(conn, "SiteB", 7)
        state.set_watermark(conn, "SiteD", 1)  # SiteB holds more of SiteD than we do
        state.update_peer(conn, "SiteC", last_request_at=200.0, outstanding_seq=5)
        state.bump_link(conn, "SiteC", "SiteC", applied=0, peer_high=0)
    with site_a.store.read() as conn:
        caught_up, behind = state.freshness(conn)
    assert caught_up == {"SiteB": 100.0}
    assert behind == {"SiteC", "SiteD"}
