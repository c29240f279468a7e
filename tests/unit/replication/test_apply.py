"""Applying replicated objects: any order and duplication converges (Hypothesis, real SQLite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from tests.support.databases import DATABASES, copy_url, template_url

from sitemail.directory.claims import move_aside_lost_claims
from sitemail.replication.apply import (
    WireObject,
    apply_objects,
    bulk_insert,
    check_objects,
    object_from_wire,
    reindex,
)
from sitemail.store import open_store, upgrade
from sitemail.store.tables import dir_object, proxy_address, proxy_conflict

G0, G5, G9 = (f"00000000-0000-4000-8000-00000000000{d}" for d in "059")
GUIDS = [G0, G5, G9]  # ordered: G0 wins any address it shares
SITES = {G0: "SiteB", G5: "SiteC", G9: "SiteB"}
POOL = ["x@example.com", "y@example.com", "z@example.com"]


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = template_url(tmp_path_factory.mktemp("apply"))
    store = open_store(url)
    upgrade(store)
    store.close()
    return url


def history(guid: str, steps: list[tuple[list[str], bool]]) -> list[WireObject]:
    """The versions the owner of `guid` emitted, oldest first (USN and version increasing)."""
    return [
        WireObject(
            guid=guid,
            site=SITES[guid],
            kind="mailbox",
            name=f"m{guid[-1]}",
            display_name=f"v{version}",
            attrs={"proxies": [("SMTP:" if i == 0 else "smtp:") + a for i, a in enumerate(addrs)]},
            usn_created=1,
            usn_changed=version * 10,
            version=version,
            is_deleted=deleted,
            changed_at=float(version),
        )
        for version, (addrs, deleted) in enumerate(steps, start=1)
    ]


step = st.tuples(st.lists(st.sampled_from(POOL), max_size=2, unique=True), st.booleans())
histories = st.fixed_dictionaries({g: st.lists(step, min_size=1, max_size=3) for g in GUIDS})


def snapshot(
    db: str, objects: list[WireObject], *, answers: list[list[WireObject]] | None = None
) -> list[tuple[Any, ...]]:
    """The directory after applying `objects` one answer each (the worst case for ordering),
    or `answers` as they come off the wire (checked, rows made ready: `check_objects`)."""
    store = open_store(db)
    try:
        with store.write() as conn:
            for obj in objects:
                apply_objects(conn, [obj], local_site="SiteA", allowed=["SiteB", "SiteC"])
            for answer in answers or []:
                checked = check_objects([o.as_wire() for o in answer])
                apply_objects(
                    conn,
                    checked.valid,
                    local_site="SiteA",
                    allowed=["SiteB", "SiteC"],
                    checked=checked,
                )
        with store.read() as conn:
            rows = [tuple(r) for r in conn.execute(select(dir_object).order_by(dir_object.c.guid))]
            rows += [
                tuple(r)
                for r in conn.execute(select(proxy_address).order_by(proxy_address.c.address_key))
            ]
            rows += [
                tuple(r)
                for r in conn.execute(
                    select(proxy_conflict).order_by(
                        proxy_conflict.c.address_key, proxy_conflict.c.guid
                    )
                )
            ]
        return rows
    finally:
        store.close()


@pytest.fixture
def fresh_db(template_db: str, tmp_path: Path) -> Any:
    counter = iter(range(10**9))

    def make() -> str:
        return copy_url(template_db, tmp_path / f"db{next(counter)}.db")

    return make


@settings(
    # two databases per example: PostgreSQL makes each in ~0.2 s, SQLite copies a file
    max_examples=12 if DATABASES.postgresql else 60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), steps=histories)
def test_apply_any_order_and_duplicates_converge(
    fresh_db: Any, data: st.DataObject, steps: dict[str, list[tuple[list[str], bool]]]
) -> None:
    """Delivered in any order, any number of times, answers leave the same directory."""
    everything = [obj for guid in GUIDS for obj in history(guid, steps[guid])]
    in_order = snapshot(fresh_db(), everything)
    shuffled = data.draw(st.permutations(everything))
    extra = data.draw(st.lists(st.sampled_from(everything), max_size=6))
    assert snapshot(fresh_db(), [*shuffled, *extra]) == in_order
    # The same in answers of several objects, as checked off the writer (duplicates included)
    cut = data.draw(st.integers(0, len(shuffled)))
    answers = [shuffled[:cut], [*shuffled[cut:], *extra]]
    assert snapshot(fresh_db(), [], answers=answers) == in_order


def test_apply_lowest_guid_holds_a_shared_address(fresh_db: Any) -> None:
    """Two sites claiming one address: the lower guid owns it, the other claim is a conflict,
    and the conflict takes over when the owner lets the address go."""
    db = fresh_db()
    first = history(G0, [(["x@example.com"], False), ([], False)])
    second = history(G5, [(["x@example.com"], False)])
    rows = snapshot(db, [second[0], first[0]])
    index = [r for r in rows if len(r) == 6 and r[0] == "x@example.com"]
    assert [r[3] for r in index][:1] == [G0]  # proxy_address row first: owner G0
    rows = snapshot(db, [first[1]])
    owners = [r[3] for r in rows if len(r) == 6 and r[0] == "x@example.com"]
    assert owners == [G5]  # promoted from the conflict claims; no conflict left


def test_apply_refuses_own_naming_context_and_undeclared_ones(fresh_db: Any) -> None:
    """Nobody may write this site's objects, nor objects outside the answer's declared NCs."""
    db = fresh_db()
    own = history(G0, [(["x@example.com"], False)])[0]
    own = WireObject(**{**own.as_wire(), "site": "SiteA"})
    other = WireObject(**{**history(G5, [([], False)])[0].as_wire(), "site": "SiteD"})
    store = open_store(db)
    try:
        with store.write() as conn:
            result = apply_objects(
                conn, [own, other], local_site="SiteA", allowed=["SiteA", "SiteB"]
            )
        assert (result.applied, result.refused) == (0, 2)
    finally:
        store.close()


def test_apply_gives_an_address_to_the_older_object_and_ours_moves_aside(fresh_db: Any) -> None:
    """The older (lower guid) replica holds the address here too, as at every site; our own
    losing object is given a numbered address instead, which is recorded in the object."""
    db = fresh_db()
    local_guid = "ffffffff-ffff-4fff-8fff-ffffffffffff"
    store = open_store(db)
    try:
        with store.write() as conn:
            bulk_insert(
                conn,
                dir_object,
                [
                    {
                        **history(G9, [(["x@example.com"], False)])[0].as_wire(),
                        "guid": local_guid,
                        "site": "SiteA",
                    }
                ],
            )
            reindex(conn, local_guid, ["SMTP:x@example.com"], "SiteA")
            older = history(G0, [(["x@example.com"], False)])[0]
            apply_objects(conn, [older], local_site="SiteA", allowed=["SiteB"])
            moved = move_aside_lost_claims(conn, "SiteA", now=5.0)
            keys = select(proxy_address.c.address_key, proxy_address.c.guid)
            index = {r.address_key: r.guid for r in conn.execute(keys)}
            waiting = conn.execute(select(proxy_conflict)).all()
            ours = conn.execute(select(dir_object).where(dir_object.c.guid == local_guid)).one()
        assert index == {"x@example.com": G0, "x2@example.com": local_guid}
        assert waiting == []
        assert [(m.address, m.given, m.held_by) for m in moved] == [
            ("x@example.com", "x2@example.com", "SiteB/m0")
        ]
        assert ours.attrs["proxies"] == ["SMTP:x2@example.com"]
        assert ours.attrs["moved_aside"][0]["to"] == "x2@example.com"
        assert ours.version == 2  # a change of ours: it replicates and ends the conflict
    finally:
        store.close()


def test_object_from_wire_refuses_what_would_break_other_code() -> None:
    """Missing per-kind attrs, DSA addresses, odd guids and huge numbers are refused."""
    good = history(G0, [(["x@example.com"], False)])[0].as_wire()
    assert object_from_wire(good) is not None
    assert object_from_wire({**good, "guid": "0"}) is None
    assert object_from_wire({**good, "version": 2**64}) is None
    assert object_from_wire({**good, "attrs": {"proxies": ["SMTP:sitemail-dsa@a.test"]}}) is None
    addressing = {**good, "kind": "site_addressing", "attrs": {"proxies": []}}
    assert object_from_wire(addressing) is None
    assert object_from_wire({**addressing, "attrs": {"smtp": "%m@a.test"}}) is not None
    # Any JSON value where a string belongs is refused, not raised (a list is not hashable).
    for field in ("guid", "site", "kind", "name", "display_name"):
        for odd in ([], {}, 1, None, True):
            assert object_from_wire({**good, field: odd}) is None, (field, odd)
    for field in ("usn_created", "usn_changed", "version"):
        assert object_from_wire({**good, field: -1}) is None
        assert object_from_wire({**good, field: True}) is None


@given(
    proxies=st.lists(
        st.tuples(st.sampled_from(["SMTP", "smtp", "X400", "x400"]), st.emails()), max_size=4
    ),
    deleted=st.booleans(),
)
def test_proxy_index_rows_are_those_of_proxy_rows(
    proxies: list[tuple[str, str]], deleted: bool
) -> None:
    """The index rows apply makes from proxy texts equal `proxy_rows` of parsed proxies."""
    from sitemail.directory import parse_proxy  # noqa: PLC0415
    from sitemail.directory.objects import proxy_rows  # noqa: PLC0415
    from sitemail.replication.apply import _index_rows  # noqa: PLC0415

    texts = [f"{kind}:{address}" for kind, address in proxies]
    obj = history(G5, [([], deleted)])[0]._replace(attrs={"proxies": texts}, is_deleted=deleted)
    expected = [] if deleted else proxy_rows(G5, map(parse_proxy, texts))
    assert _index_rows(obj) == expected
