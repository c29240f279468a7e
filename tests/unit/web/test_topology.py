"""The organisation's picture: which links exist, where they are drawn, and their colours."""

from __future__ import annotations

from sitemail.web.console.topology import (
    LAG_ERROR,
    QUEUE_ERROR_AGE,
    WAITING_WARN,
    Health,
    HopLoad,
    LinkKind,
    ReplicationView,
    build_topology,
    connected_health,
    replication_health,
)

NOW = 1_800_000_000.0
SITES = [("SiteA", "Site A"), ("SiteB", "Site B"), ("SiteC", "Site C")]


def test_replication_health() -> None:
    fresh = ReplicationView(None, 30.0, 900.0)
    assert replication_health(fresh, NOW)[0] is Health.OK
    assert "30 s ago" in replication_health(fresh, NOW)[1]
    assert replication_health(None, NOW)[0] is Health.WARN
    never = ReplicationView(None, None, 900.0)
    assert replication_health(never, NOW) == (Health.WARN, "never replicated completely")
    waiting = ReplicationView(NOW - WAITING_WARN - 60, 30.0, 900.0)
    health, why = replication_health(waiting, NOW)
    assert health is Health.WARN
    assert "unanswered" in why
    recent_wait = ReplicationView(NOW - 5, 30.0, 900.0)
    assert replication_health(recent_wait, NOW)[0] is Health.OK
    behind = ReplicationView(None, 2 * 900.0 + WAITING_WARN + 1, 900.0)
    assert replication_health(behind, NOW)[0] is Health.WARN
    stale = ReplicationView(None, LAG_ERROR + 1, None)
    assert replication_health(stale, NOW)[0] is Health.ERROR
    # "never" scheduled: only a day without an exchange is an error
    manual = ReplicationView(None, 5 * 3600.0, None)
    assert replication_health(manual, NOW)[0] is Health.OK


def test_connected_site_health_from_the_queue() -> None:
    assert connected_health(None, NOW) == (Health.OK, "no mail waiting")
    assert connected_health(HopLoad(queued=2, oldest=NOW - 3), NOW)[0] is Health.OK
    deferred = HopLoad(queued=1, deferred=1, oldest=NOW - 60, last_error="connection refused")
    health, why = connected_health(deferred, NOW)
    assert health is Health.WARN
    assert "1 waiting" in why
    assert "connection refused" in why
    old = HopLoad(queued=1, oldest=NOW - QUEUE_ERROR_AGE - 1)
    assert connected_health(old, NOW)[0] is Health.ERROR
    failing = HopLoad(queued=1, failing=1, oldest=NOW - 5, last_error="550 no")
    assert connected_health(failing, NOW)[0] is Health.ERROR


def test_links_are_judged_only_where_this_site_owns_them() -> None:
    picture = build_topology(
        "SiteA",
        sites=SITES,
        connected=[("SiteA", "SiteB"), ("SiteB", "SiteA"), ("SiteB", "SiteC")],
        connectors=[("SiteA", "SiteB"), ("SiteB", "SiteA")],
        replication={"SiteB": ReplicationView(NOW - 3 * WAITING_WARN, 60.0, 900.0)},
        loads={"SiteB": HopLoad(queued=1, deferred=1, oldest=NOW - 10, last_error="4.4.1")},
        now=NOW,
    )
    health = {(link.kind, link.source, link.target): link.health for link in picture.links}
    assert health == {
        (LinkKind.CONNECTED_SITE, "SiteA", "SiteB"): Health.WARN,  # deferred mail
        (LinkKind.CONNECTED_SITE, "SiteB", "SiteA"): Health.UNKNOWN,
        (LinkKind.CONNECTED_SITE, "SiteB", "SiteC"): Health.UNKNOWN,
        # a connector at SiteA pulls from SiteB: the directory flows SiteB -> SiteA
        (LinkKind.REPLICATION, "SiteB", "SiteA"): Health.WARN,  # request unanswered
        (LinkKind.REPLICATION, "SiteA", "SiteB"): Health.UNKNOWN,
    }
    nodes = {n.name: n for n in picture.nodes}
    assert nodes["SiteA"].local
    assert nodes["SiteA"].health is Health.OK
    assert nodes["SiteB"].health is Health.WARN  # the worst of our links to it
    assert nodes["SiteC"].health is Health.UNKNOWN  # no link of ours
    assert nodes["SiteB"].display_name == "Site B"


def test_every_node_fits_the_picture_and_the_local_site_is_on_top() -> None:
    for count in range(1, 9):
        names = [(f"Site{i}", f"Site{i}") for i in range(count)]
        picture = build_topology(
            "Site0", sites=names, connected=[], connectors=[], replication={}, loads={}, now=NOW
        )
        for node in picture.nodes:
            assert 30 <= node.x <= picture.width - 30, (count, node)
            assert 30 <= node.y <= picture.height - 30, (count, node)
        top = min(picture.nodes, key=lambda n: n.y)
        assert top.name == "Site0"


def test_both_directions_and_both_kinds_between_two_sites_are_drawn_apart() -> None:
    picture = build_topology(
        "SiteA",
        sites=SITES[:2],
        connected=[("SiteA", "SiteB"), ("SiteB", "SiteA")],
        connectors=[("SiteA", "SiteB"), ("SiteB", "SiteA")],
        replication={},
        loads={},
        now=NOW,
    )
    segments = {(link.x1, link.y1, link.x2, link.y2) for link in picture.links}
    assert len(segments) == 4


def test_a_link_to_a_site_not_replicated_yet_still_shows() -> None:
    picture = build_topology(
        "SiteA",
        sites=SITES[:1],
        connected=[("SiteA", "SiteX")],
        connectors=[],
        replication={},
        loads={},
        now=NOW,
    )
    assert {n.name for n in picture.nodes} == {"SiteA", "SiteX"}


def test_connected_site_health_is_error_when_the_site_does_not_answer() -> None:
    """Mail that found nobody answering (4.4.1) makes the link red at once, not amber."""
    down = HopLoad(queued=1, deferred=1, oldest=NOW - 5, unreachable=True, last_error="refused")
    health, why = connected_health(down, NOW)
    assert health is Health.ERROR
    assert why.endswith("(the site does not answer: down?)")
