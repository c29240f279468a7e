"""The routing decision against a golden table, and the routing table's paths.

The router runs on a real directory (SQLite in a temporary data dir); the other sites'
objects arrive the way replication applies them (`apply_objects`).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind, RecipientChanges
from sitemail.directory.ims_objects import ConnectedSite, DomainEntry
from sitemail.replication.apply import WireObject, apply_objects
from sitemail.routing.route import Transport
from sitemail.routing.router import Freshness, Router
from sitemail.routing.table import build_table
from sitemail.routing.trace import Hop, Trace

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "routing_decisions.txt"


def _wire(
    site: str,
    kind: str,
    name: str,
    attrs: dict[str, Any],
    changed_at: float = 1.0,
    guid: str = "",
) -> WireObject:
    guid = guid or str(uuid.uuid4())
    return WireObject(guid, site, kind, name, name, attrs, 1, 1, 1, False, changed_at)


def _older(n: int) -> str:
    """A guid older than any made now (UUIDv7 order: the lowest wins a shared address)."""
    return f"00000000-0000-7000-8000-{n:012d}"


def _replicas() -> list[WireObject]:
    org = {"organization": "ExchangeORG"}
    return [
        _wire("SiteB", "site", "SiteB", {**org, "routing_domain": "siteb.example.com"}),
        _wire("SiteC", "site", "SiteC", {**org, "routing_domain": "sitec.example.com"}),
        _wire("SiteD", "site", "SiteD", org),
        _wire(
            "SiteB",
            "mailbox",
            "bob",
            {"proxies": ["SMTP:bob@example.com", "smtp:bob@siteb.example.com"]},
            changed_at=1000.0,
        ),
        _wire("SiteC", "mailbox", "carol", {"proxies": ["SMTP:carol@example.com"]}),
        _wire("SiteD", "mailbox", "dave", {"proxies": ["SMTP:dave@example.com"]}),
        # One owner for an address two sites gave before they replicated: the older object
        _wire("SiteB", "mailbox", "dup", {"proxies": ["SMTP:dup@example.com"]}, guid=_older(1)),
        _wire("SiteB", "mailbox", "twin", {"proxies": ["SMTP:twin@example.com"]}, guid=_older(3)),
        _wire("SiteD", "mailbox", "twin", {"proxies": ["SMTP:twin@example.com"]}, guid=_older(2)),
        _wire("SiteB", "connected_site", "SiteC", {"routing_address": "sitec.example.com"}),
        _wire("SiteB", "connected_site", "SiteA", {"routing_address": "sitea.example.com"}),
        _wire(
            "SiteB",
            "domain",
            "partner.example",
            {"type": "internal_relay", "forward_unresolved": "mail.partner.example"},
        ),
    ]


# The replication state the golden router sees (the table's header says it): caught up with
# SiteB at 2000 and with SiteC and SiteD at 9000, nothing behind unless a case says so; the
# clock reads 10000 and an unknown recipient waits at most 7200 s.
_CAUGHT_UP = {"SiteB": 2000.0, "SiteC": 9000.0, "SiteD": 9000.0}
_NOW, _WINDOW = 10000.0, 7200.0


class _Replication:
    """The freshness the golden router reads, set per case."""

    def __init__(self) -> None:
        self.behind: frozenset[str] = frozenset()

    def __call__(self) -> Freshness:
        return Freshness(dict(_CAUGHT_UP), self.behind)


_REPLICATION = _Replication()


@pytest.fixture
def router(site_a: AdminService) -> Router:
    service = site_a
    service.add_recipient(
        ObjectKind.MAILBOX, "alice", display_name="Alice", extra_addresses=["alice@example.com"]
    )
    service.add_recipient(ObjectKind.MAILBOX, "gone", display_name="Gone")
    service.update_recipient("gone", RecipientChanges(add_addresses=["gone@example.com"]))
    service.remove_recipient("gone")  # just now: it may have moved to another site
    service.add_recipient(  # younger than SiteB's dup, which replicates here later
        ObjectKind.MAILBOX, "dup", display_name="Dup", extra_addresses=["dup@example.com"]
    )
    routing = service.routing
    routing.add_connected_site("SiteB", "@SiteB.example.com")
    routing.add_connected_site("SiteC", "sitec.example.com", cost=5)
    routing.add_domain("example.com")
    routing.add_domain(
        "shared.example", internal_relay=True, forward_unresolved="relay.shared.example:2525"
    )
    service.add_domain_route("siteb.example.com", "127.10.10.15")
    service.add_domain_route("routed.example", "routed-host")
    service.add_domain_route("#exact.example", "exact-host")
    with service.store.write() as conn:
        result = apply_objects(
            conn, _replicas(), local_site="SiteA", allowed=["SiteB", "SiteC", "SiteD"]
        )
    assert result.refused == 0
    return Router(
        service.directory,
        freshness=_REPLICATION,
        unknown_window=_WINDOW,
        loop_hold=300.0,
        clock=lambda: _NOW,
    )


def _trace(text: str, arrived: float | None, version: int) -> Trace:
    """`Site@at[:k=v]...,Site@at` (latest pass first) as the queue reads it from a header;
    `v=current` stands for the directory's version now."""
    hops = []
    for item in filter(None, text.split(",")):
        site, _, rest = item.partition("@")
        at, *params = rest.replace("v=current", f"v={version}").split(":")
        hops.append(Hop(site, float(at), dict(p.split("=", 1) for p in params)))
    passed: dict[str, float] = {}
    for hop in hops:
        passed[hop.site] = max(hop.at, passed.get(hop.site, 0.0))
    return Trace(passed, hops, arrived)


def golden_cases() -> list[tuple[str, dict[str, str], str]]:
    """(address, options: trace / arrived / behind, expected) per line of the table."""
    cases = []
    for raw in GOLDEN.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        left, arrow, expected = line.partition(" -> ")
        assert arrow, f"malformed golden line: {raw!r}"
        address, *options = left.split()
        cases.append((address, dict(o.split("=", 1) for o in options), expected.strip()))
    return cases


@pytest.mark.parametrize(("address", "options", "expected"), golden_cases())
def test_routing_decision_matches_the_golden_table(
    router: Router, address: str, options: dict[str, str], expected: str
) -> None:
    arrived = float(options["arrived"]) if "arrived" in options else None
    trace = _trace(options.get("trace", ""), arrived, router.directory_version())
    _REPLICATION.behind = frozenset(filter(None, options.get("behind", "").split("+")))
    route = router.route(address, trace)
    nexthop = "-" if route.transport is Transport.LOCAL else route.nexthop or "-"  # local: a guid
    got = f"{route.transport} {nexthop} {route.rule}"
    if route.transport in (Transport.REJECT, Transport.DEFER):
        got += f" {route.status}"
    assert got == expected


def test_every_rule_is_in_the_golden_table() -> None:
    rules = {expected.split()[2] for _, _, expected in golden_cases()}
    assert rules >= {
        "directory",
        "directory-service",
        "internal-relay",
        "authoritative",
        "domain-route",
        "site-domain",
        "mx",
    }


def test_smart_host_takes_what_no_domain_route_matches(site_a: AdminService) -> None:
    site_a.add_domain_route("routed.example", "routed-host")
    router = Router(site_a.directory, smart_host="smart.example:587")
    assert router.route("x@gmail.com").nexthop == "smart.example:587"
    assert router.route("x@routed.example").nexthop == "routed-host"
    assert router.route("nobody@sitea.example.com").transport is Transport.REJECT


def test_explain_tells_each_step(router: Router) -> None:
    explanation = router.explain("carol@example.com")
    text = "\n".join(explanation.steps)
    assert "home site is SiteC" in text
    assert "SiteA > SiteB > SiteC (cost 2)" in text
    assert explanation.route.site == "SiteC"


def test_site_hop_of_a_first_hop_uses_its_domain_route(router: Router) -> None:
    hop = router.site_hop("SiteB")
    assert hop is not None
    assert (hop.routing_address, hop.relay, hop.pins) == (
        "siteb.example.com",
        "127.10.10.15",
        frozenset(),
    )
    assert router.site_hop("SiteC") is None  # not a first hop: mail for it goes to SiteB
    assert router.site_hop("SiteD") is None


# -- the table's paths, pure ----------------------------------------------------------------


def _entry(owner: str, site: str, cost: int = 1, address: str = "") -> ConnectedSite:
    return ConnectedSite(site, address or f"{site.lower()}.example", cost, "", owner)


def test_cheapest_path_prefers_lower_cost_then_fewer_hops_then_name() -> None:
    table = build_table(
        "A",
        known_sites=["A", "B", "C", "D", "E", "F"],
        connected=[
            _entry("A", "B", 1),
            _entry("A", "C", 1),
            _entry("B", "D", 1),
            _entry("C", "D", 1),  # A>B>D and A>C>D tie on cost and hops: B comes first
            _entry("A", "E", 3),
            _entry("B", "E", 1),
            _entry("D", "E", 1),  # A>B>E (2) beats A>E (3) and A>B>D>E (3)
            _entry("E", "A", 1),  # edges into this site are ignored
        ],
    )
    assert table.sites["D"].path == ("A", "B", "D")
    assert table.sites["E"].path == ("A", "B", "E")
    assert table.sites["E"].cost == 2
    assert table.sites["E"].routing_address == "b.example"  # our entry for the first hop
    assert table.unreachable == ("F",)


def test_paths_start_only_at_our_own_entries() -> None:
    """Another site's entries extend paths; they never start one from here."""
    table = build_table("A", known_sites=["A", "B", "C"], connected=[_entry("B", "C")])
    assert table.sites == {}
    assert table.unreachable == ("B", "C")


def test_a_routing_address_two_sites_claim_is_ambiguous() -> None:
    table = build_table(
        "A",
        connected=[
            _entry("A", "B", address="example.com"),
            _entry("A", "C", address="example.com"),
            _entry("A", "D", address="d.example"),
        ],
    )
    assert table.ambiguous_domains == ("example.com",)
    assert table.site_domains == {"d.example": "D"}


def test_our_own_domain_entries_decide_over_another_sites() -> None:
    table = build_table(
        "A",
        domains=[
            DomainEntry("shared.example", "internal_relay", "host-b", "B"),
            DomainEntry("shared.example", "authoritative", "", "A"),
            DomainEntry("other.example", "internal_relay", "host-c", "C"),
        ],
    )
    assert table.relayed_by == {"other.example": "C"}
    assert table.internal_relay == {}


def test_a_site_replication_just_brought_is_routed_to_not_deferred(
    site_a: AdminService,
) -> None:
    """The table is cached for seconds, the directory is read live: a recipient of a site
    the cached table does not know yet (replication brought the site, its mailbox and a
    Connected Sites path a moment ago) is routed along the new path, not deferred."""
    site_a.routing.add_connected_site("SiteB", "siteb.example.com")
    router = Router(site_a.directory)
    assert "SiteC" not in router.table().sites  # cached now, before SiteC is known
    org = {"organization": "ExchangeORG"}
    with site_a.store.write() as conn:
        apply_objects(
            conn,
            [
                _wire("SiteB", "site", "SiteB", {**org, "routing_domain": "siteb.example.com"}),
                _wire("SiteC", "site", "SiteC", {**org, "routing_domain": "sitec.example.com"}),
                _wire("SiteB", "connected_site", "SiteC", {"routing_address": "sitec.example.com"}),
                _wire("SiteC", "mailbox", "carol", {"proxies": ["SMTP:carol@example.com"]}),
            ],
            local_site="SiteA",
            allowed=["SiteB", "SiteC"],
        )
    time.sleep(0.25)  # past the recheck age, well within the cache's
    route = router.route("carol@example.com")
    assert (route.transport, route.nexthop) == (Transport.SITE, "SiteB")
