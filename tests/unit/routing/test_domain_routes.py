"""E-Mail Domain routes: the golden table, next-hop parsing, and matching properties."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sitemail.routing.domain_routes import (
    DomainRoute,
    format_nexthop,
    match_domain_route,
    parse_nexthop,
)

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "domain_routes.txt"

# The fixed route list the golden table is written against. Order is deliberately mixed:
# general entries before specific ones, an exact entry after a suffix entry.
ROUTES: tuple[DomainRoute, ...] = (
    DomainRoute("com", "catch-com.test", 2526),
    DomainRoute("sea.com", "relay-sea.test", None),
    DomainRoute("exact.test", "exact-suffix.test", None),
    DomainRoute("x.sea.com", "192.0.2.10", 2525),
    DomainRoute("#exact.test", "exact-only.test", None),
    DomainRoute("#microsoft.com", "inbound.test", None),
    DomainRoute("Upper.Example.", "2001:db8::25", 2527),
    DomainRoute("#only.test", "192.0.2.77", None),
    DomainRoute("dup.test", "first.test", None),
    DomainRoute("dup.test", "second.test", None),
)


def golden_cases() -> list[tuple[str, str]]:
    cases = []
    for raw in GOLDEN.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        domain, arrow, expected = line.partition(" -> ")
        assert arrow, f"malformed golden line: {raw!r}"
        cases.append((domain.strip(), expected.strip()))
    return cases


def describe(route: DomainRoute | None) -> str:
    return "none" if route is None else f"{route.domain} {route.nexthop}"


def test_match_domain_route_golden_table() -> None:
    """Every line of tests/golden/domain_routes.txt holds for ROUTES."""
    cases = golden_cases()
    assert len(cases) > 20
    wrong = [
        f"{domain} -> {got} (expected {expected})"
        for domain, expected in cases
        if (got := describe(match_domain_route(ROUTES, domain))) != expected
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("seed", range(5))
def test_match_domain_route_ignores_list_order(seed: int) -> None:
    """Without duplicate domains, any order of the list gives the golden answers."""
    routes = [route for route in ROUTES if route.host != "second.test"]
    random.Random(seed).shuffle(routes)
    for domain, expected in golden_cases():
        assert describe(match_domain_route(routes, domain)) == expected, domain


def test_match_domain_route_accepts_a_generator() -> None:
    """The routes may be any iterable, consumed once."""
    route = match_domain_route((r for r in ROUTES), "x.sea.com")
    assert route is not None
    assert route.host == "192.0.2.10"


def test_match_domain_route_empty_table_and_empty_domain() -> None:
    """No routes, or no domain, means no route."""
    assert match_domain_route([], "sea.com") is None
    assert match_domain_route(ROUTES, "") is None
    assert match_domain_route(ROUTES, ".") is None


def test_domain_route_properties() -> None:
    """`exact`, `match_domain` and `nexthop` read the entry as written."""
    route = DomainRoute(" #Only.Test. ", "192.0.2.77", 25)
    assert route.exact
    assert route.match_domain == "only.test"
    assert route.nexthop == "192.0.2.77:25"
    assert DomainRoute("a.test", "2001:db8::1", 25).nexthop == "[2001:db8::1]:25"
    assert DomainRoute("a.test", "2001:db8::1", None).nexthop == "2001:db8::1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("relay.example.net", ("relay.example.net", None)),
        ("Relay.Example.NET.", ("relay.example.net", None)),
        ("relay.example.net:2525", ("relay.example.net", 2525)),
        ("192.0.2.1", ("192.0.2.1", None)),
        ("192.0.2.1:26", ("192.0.2.1", 26)),
        ("[192.0.2.1]", ("192.0.2.1", None)),
        ("[192.0.2.1]:587", ("192.0.2.1", 587)),
        ("[2001:db8::1]", ("2001:db8::1", None)),
        ("[2001:DB8:0::1]:2525", ("2001:db8::1", 2525)),
        ("[IPv6:2001:db8::1]:25", ("2001:db8::1", 25)),
        ("2001:db8::1", ("2001:db8::1", None)),
        ("::1", ("::1", None)),
        ("[smtp.example.com]:587", ("smtp.example.com", 587)),
        ("  localhost  ", ("localhost", None)),
        ("mail_relay.example", ("mail_relay.example", None)),
        ("bücher.example", ("xn--bcher-kva.example", None)),
    ],
)
def test_parse_nexthop_accepts(text: str, expected: tuple[str, int | None]) -> None:
    """Names, IPv4, bracketed IPv4/IPv6 and bare IPv6 parse to canonical (host, port)."""
    assert parse_nexthop(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "host:",
        "host:0",
        "host:65536",
        "host:25x",
        "host:-1",
        "[2001:db8::1",
        "[]",
        "[2001:db8::1]x",
        "[2001:db8::1]:",
        "2001:db8::zz",
        "-bad-.example",
        "bad..example",
        "under score.example",
        "1.2.3.400",
        "host:25:26",
        "a" * 64 + ".example",
    ],
)
def test_parse_nexthop_rejects(text: str) -> None:
    """Malformed next hops raise ValueError with the text quoted."""
    with pytest.raises(ValueError, match="next hop"):
        parse_nexthop(text)


_label = st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True)
_name = st.lists(_label, min_size=1, max_size=4).map(".".join)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(str)
_port = st.none() | st.integers(min_value=1, max_value=65535)


@given(host=_name | _ipv4 | _ipv6, port=_port)
def test_format_then_parse_nexthop_round_trips(host: str, port: int | None) -> None:
    """parse_nexthop(format_nexthop(h, p)) == (h, p) for canonical hosts."""
    assert parse_nexthop(format_nexthop(host, port)) == (host, port)


@given(entry=_name, left=_label, prefix=_label)
def test_suffix_entries_match_on_whole_labels(entry: str, left: str, prefix: str) -> None:
    """`d` matches `d` and `x.d`, never `xd`; `#d` matches `d` only."""
    route = DomainRoute(entry, "relay.test")
    exact = DomainRoute("#" + entry, "relay.test")
    assert route.matches(entry)
    assert route.matches(f"{left}.{entry}".upper())
    assert not route.matches(prefix + entry)
    assert exact.matches(entry)
    assert not exact.matches(f"{left}.{entry}")


@given(domain=st.lists(_label, min_size=1, max_size=5).map(".".join))
def test_most_specific_suffix_wins_for_any_depth(domain: str) -> None:
    """With an entry for every suffix of a domain, the domain's own entry is chosen."""
    labels = domain.split(".")
    suffixes = [".".join(labels[i:]) for i in range(len(labels))]
    routes = [DomainRoute(s, f"h{i}.test") for i, s in enumerate(suffixes)]
    for order in (routes, routes[::-1]):
        chosen = match_domain_route(order, "www." + domain)
        assert chosen is not None
        assert chosen.match_domain == domain
