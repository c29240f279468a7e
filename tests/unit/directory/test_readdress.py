"""Changing Site Addressing: keep-old, drop-old, dry-run, collisions, template-only changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from sitemail.admin.service import AdminService
from sitemail.core import InvalidValueError
from sitemail.directory import Collision, ObjectKind, Recipient, RecipientChanges
from sitemail.directory import readdress as readdress_module
from sitemail.store.tables import proxy_address, site_usn

MAILBOX, CONTACT, GROUP = ObjectKind.MAILBOX, ObjectKind.CONTACT, ObjectKind.GROUP


def add_mailbox(site: AdminService, alias: str, **kwargs: str) -> Recipient:
    return site.add_recipient(MAILBOX, alias, display_name=kwargs.pop("name", alias), **kwargs)


def proxies(site: AdminService, ref: str) -> list[str]:
    return list(site.get_recipient(ref).attrs["proxies"])


def usn_counter(site: AdminService) -> int:
    with site.store.read() as conn:
        return int(
            conn.execute(select(site_usn.c.usn).where(site_usn.c.site == "SiteA")).scalar_one()
        )


def owner_alias(site: AdminService, address: str) -> str | None:
    owner = site.directory.lookup(address)
    return None if owner is None else owner.alias


def import_replica(site: AdminService, alias: str, address: str) -> None:
    """Make `address` held by a recipient of SiteB (a replica here)."""
    record = {
        "guid": f"guid-{alias}",
        "site": "SiteB",
        "kind": "mailbox",
        "name": alias,
        "display_name": alias,
        "attrs": {"proxies": [f"SMTP:{address}"]},
        "usn_changed": 5,
        "version": 1,
        "is_deleted": False,
    }
    site.import_directory([json.dumps(record)])


def assert_index_matches_proxies(site: AdminService) -> None:
    """The proxy_address index holds exactly the live recipients' proxies (the invariant)."""
    expected = {
        (p.key, p.address, r.guid, p.type, p.primary)
        for r in site.directory.list_recipients(None)
        for p in r.proxies
    }
    with site.store.read() as conn:
        c = proxy_address.c
        rows = conn.execute(select(c.address_key, c.address, c.guid, c.type, c.is_primary)).all()
    assert {tuple(row) for row in rows} == expected


@pytest.fixture
def populated(site_a: AdminService) -> AdminService:
    """SiteA with a mailbox (one extra secondary), a contact and a group, on @sitea.example.com."""
    site_a.add_recipient(
        MAILBOX,
        "jsmith",
        display_name="John Smith",
        given_name="John",
        surname="Smith",
        extra_addresses=["john@legacy.example"],
    )
    site_a.add_recipient(CONTACT, "partner", display_name="Partner", target="p@partner.example")
    site_a.add_recipient(GROUP, "staff", display_name="Staff", members=["jsmith"])
    return site_a


# -- keep old (the default) -------------------------------------------------------------------


def test_readdress_gives_every_recipient_a_new_primary(populated: AdminService) -> None:
    """With update_recipients, mailboxes, contacts and groups all get the new template's address."""
    result = populated.set_addressing("smtp", "@example.com", update_recipients=True)
    assert result.applied
    assert result.updated == 3
    assert (result.old_template, result.new_template) == ("%m@sitea.example.com", "%m@example.com")
    primaries = {r.alias: r.primary_smtp for r in populated.list_recipients(None)}
    assert primaries == {
        "jsmith": "jsmith@example.com",
        "partner": "partner@example.com",
        "staff": "staff@example.com",
    }
    assert populated.addressing() == "%m@example.com"


def test_readdress_keeps_old_primary_as_secondary(populated: AdminService) -> None:
    """The old primary stays as `smtp:` so mail to it still arrives; other secondaries stay."""
    populated.set_addressing("smtp", "@example.com", update_recipients=True)
    assert proxies(populated, "jsmith") == [
        "SMTP:jsmith@example.com",
        "smtp:jsmith@sitea.example.com",
        "smtp:john@legacy.example",
    ]
    owner = populated.directory.lookup("jsmith@sitea.example.com")
    assert owner is not None
    assert (owner.alias, owner.is_primary) == ("jsmith", False)
    assert owner_alias(populated, "jsmith@example.com") == "jsmith"


def test_readdress_keeps_group_members_and_contact_target(populated: AdminService) -> None:
    """Re-addressing touches proxies only: members, target and names are unchanged."""
    before = {r.alias: r for r in populated.list_recipients(None)}
    populated.set_addressing("smtp", "@example.com", update_recipients=True)
    after = {r.alias: r for r in populated.list_recipients(None)}
    for alias, r in before.items():
        old = {k: v for k, v in r.attrs.items() if k != "proxies"}
        new = {k: v for k, v in after[alias].attrs.items() if k != "proxies"}
        assert old == new
        assert after[alias].version == r.version + 1


def test_readdress_uses_every_token_of_the_template(populated: AdminService) -> None:
    """The new template is expanded per recipient (%1g%s), with the alias as fallback."""
    populated.set_addressing("smtp", "%1g%s@example.com", update_recipients=True)
    primaries = {r.alias: r.primary_smtp for r in populated.list_recipients(None)}
    assert primaries == {
        "jsmith": "JSmith@example.com",
        "partner": "partner@example.com",  # no given name or surname: the alias
        "staff": "staff@example.com",
    }


def test_readdress_twice_changes_nothing_the_second_time(populated: AdminService) -> None:
    """Running the same change again updates no recipient and takes no USN."""
    populated.set_addressing("smtp", "@example.com", update_recipients=True)
    mark = usn_counter(populated)
    again = populated.set_addressing("smtp", "@example.com", update_recipients=True)
    assert again.updated == 0
    assert usn_counter(populated) == mark


# -- USNs --------------------------------------------------------------------------------------


def test_readdress_allocates_one_block_of_usns(populated: AdminService) -> None:
    """The template takes one USN, the re-addressed recipients a consecutive block after it."""
    mark = usn_counter(populated)
    populated.set_addressing("smtp", "@example.com", update_recipients=True)
    assert usn_counter(populated) == mark + 1 + 3
    changes = populated.directory.changes_since("SiteA", mark)
    assert changes[0].kind is ObjectKind.SITE_ADDRESSING
    assert changes[0].usn_changed == mark + 1
    assert sorted(c.usn_changed for c in changes[1:]) == [mark + 2, mark + 3, mark + 4]
    assert {c.alias for c in changes[1:]} == {"jsmith", "partner", "staff"}


def test_readdress_leaves_tombstones_and_replicas_alone(populated: AdminService) -> None:
    """Only live recipients of this site are re-addressed."""
    add_mailbox(populated, "gone")
    tombstone = populated.remove_recipient("gone")
    import_replica(populated, "bsmith", "bsmith@siteb.example.com")
    result = populated.set_addressing("smtp", "@example.com", update_recipients=True)
    assert result.updated == 3
    assert proxies(populated, "bsmith") == ["SMTP:bsmith@siteb.example.com"]
    (stored,) = populated.directory.list_recipients(MAILBOX, include_deleted=True, site="SiteA")[:1]
    assert stored.guid == tombstone.guid
    assert stored.usn_changed == tombstone.usn_changed


def test_readdress_reports_progress(populated: AdminService) -> None:
    """progress_total receives the number of recipients to write; batches add up to it."""
    totals: list[int] = []
    advanced: list[int] = []

    def start(total: int) -> object:
        totals.append(total)
        return advanced.append

    populated.set_addressing(
        "smtp",
        "@example.com",
        update_recipients=True,
        progress_total=start,  # type: ignore[arg-type]
    )
    assert totals == [3]
    assert sum(advanced) == 3


# -- drop old ------------------------------------------------------------------------------------


def test_readdress_drop_old_releases_old_primaries(populated: AdminService) -> None:
    """With drop_old the old primary is gone from the recipient and from the index."""
    populated.set_addressing("smtp", "@example.com", update_recipients=True, drop_old=True)
    assert proxies(populated, "jsmith") == ["SMTP:jsmith@example.com", "smtp:john@legacy.example"]
    assert populated.directory.lookup("jsmith@sitea.example.com") is None
    assert populated.directory.lookup("john@legacy.example") is not None  # secondaries stay


def test_readdress_drop_old_needs_update_recipients(populated: AdminService) -> None:
    """drop_old without update_recipients is refused (it would drop nothing)."""
    with pytest.raises(InvalidValueError, match="update-recipients"):
        populated.set_addressing("smtp", "@example.com", update_recipients=False, drop_old=True)
    assert populated.addressing() == "%m@sitea.example.com"


@pytest.mark.parametrize("batch", [1, 2000])
def test_readdress_drop_old_lets_another_recipient_take_a_released_address(
    site_a: AdminService, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """An old primary released by the run can go to another recipient, whatever the batching."""
    monkeypatch.setattr(readdress_module, "_BATCH", batch)
    add_mailbox(site_a, "jsmith", surname="Smith")  # created first: gets smith@ under %s
    add_mailbox(site_a, "smith", surname="Jones")
    site_a.set_addressing("smtp", "%m@example.com", update_recipients=True, drop_old=True)
    assert owner_alias(site_a, "smith@example.com") == "smith"
    result = site_a.set_addressing("smtp", "%s@example.com", update_recipients=True, drop_old=True)
    assert result.plan is not None
    assert result.plan.collisions == []
    assert owner_alias(site_a, "smith@example.com") == "jsmith"
    assert owner_alias(site_a, "jones@example.com") == "smith"


# -- dry run ----------------------------------------------------------------------------------


def test_readdress_dry_run_changes_nothing(populated: AdminService) -> None:
    """A dry run leaves template, recipients, index and USN counter exactly as they were."""
    before = populated.list_recipients(None)
    mark = usn_counter(populated)
    result = populated.set_addressing(
        "smtp", "@example.com", update_recipients=True, drop_old=True, dry_run=True
    )
    assert not result.applied
    assert result.updated == 0
    assert populated.list_recipients(None) == before
    assert usn_counter(populated) == mark
    assert populated.addressing() == "%m@sitea.example.com"
    assert populated.directory.lookup("jsmith@example.com") is None


def test_readdress_dry_run_returns_the_full_diff(populated: AdminService) -> None:
    """The dry run's plan lists every recipient's old and new primary and its new proxies."""
    result = populated.set_addressing("smtp", "@example.com", update_recipients=True, dry_run=True)
    assert result.plan is not None
    diff = {c.recipient.alias: (c.old_primary, c.new_primary) for c in result.plan.changed}
    assert diff == {
        "jsmith": ("jsmith@sitea.example.com", "jsmith@example.com"),
        "partner": ("partner@sitea.example.com", "partner@example.com"),
        "staff": ("staff@sitea.example.com", "staff@example.com"),
    }
    (jsmith,) = [c for c in result.plan.changed if c.recipient.alias == "jsmith"]
    assert jsmith.new_proxies == [
        "SMTP:jsmith@example.com",
        "smtp:jsmith@sitea.example.com",
        "smtp:john@legacy.example",
    ]


def test_readdress_dry_run_reports_collisions(populated: AdminService) -> None:
    """Collisions are part of the dry run's report too."""
    import_replica(populated, "bsmith", "jsmith@example.com")
    result = populated.set_addressing("smtp", "@example.com", update_recipients=True, dry_run=True)
    assert result.plan is not None
    assert [c.given for c in result.plan.collisions] == ["jsmith2@example.com"]
    assert populated.directory.lookup("jsmith2@example.com") is None


# -- collisions ---------------------------------------------------------------------------------


def test_readdress_collision_with_another_site_gets_a_counter(populated: AdminService) -> None:
    """An address held elsewhere in the organisation makes jsmith2, reported with its holder."""
    import_replica(populated, "bsmith", "jsmith@example.com")
    result = populated.set_addressing("smtp", "@example.com", update_recipients=True)
    assert result.plan is not None
    assert result.plan.collisions == [
        Collision("jsmith", "jsmith@example.com", "jsmith2@example.com", "bsmith (SiteB)")
    ]
    assert populated.get_recipient("jsmith").primary_smtp == "jsmith2@example.com"
    assert owner_alias(populated, "jsmith@example.com") == "bsmith"


def test_readdress_collision_counter_skips_taken_numbers(populated: AdminService) -> None:
    """The counter goes up until the address is free."""
    import_replica(populated, "b1", "jsmith@example.com")
    import_replica(populated, "b2", "jsmith2@example.com")
    populated.set_addressing("smtp", "@example.com", update_recipients=True)
    assert populated.get_recipient("jsmith").primary_smtp == "jsmith3@example.com"


def test_readdress_collision_within_the_same_run(site_a: AdminService) -> None:
    """Two recipients wanting one address: the older gets it, the newer a counter."""
    add_mailbox(site_a, "jsmith", given_name="John", surname="Smith")
    add_mailbox(site_a, "jsmith1", given_name="Jane", surname="Smith")
    result = site_a.set_addressing("smtp", "%1g%s@example.com", update_recipients=True)
    assert result.plan is not None
    assert result.plan.collisions == [
        Collision("jsmith1", "JSmith@example.com", "JSmith2@example.com", "jsmith (SiteA)")
    ]
    assert owner_alias(site_a, "jsmith@example.com") == "jsmith"
    assert owner_alias(site_a, "jsmith2@example.com") == "jsmith1"


def test_readdress_collision_with_a_local_secondary(site_a: AdminService) -> None:
    """An address held as another local recipient's secondary is a collision too."""
    site_a.add_recipient(MAILBOX, "john", display_name="J", extra_addresses=["jsmith@example.com"])
    add_mailbox(site_a, "jsmith")
    result = site_a.set_addressing("smtp", "@example.com", update_recipients=True)
    assert result.plan is not None
    assert [(c.alias, c.held_by) for c in result.plan.collisions] == [("jsmith", "john (SiteA)")]
    assert site_a.get_recipient("jsmith").primary_smtp == "jsmith2@example.com"


def test_readdress_collision_counter_keeps_long_addresses_valid(site_a: AdminService) -> None:
    """A counter on a 64-octet local part replaces its tail: the address stays valid."""
    alias = "x" * 64
    import_replica(site_a, "holder", f"{alias}@example.com")
    add_mailbox(site_a, alias)
    site_a.set_addressing("smtp", "@example.com", update_recipients=True)
    assert site_a.get_recipient(alias).primary_smtp == "x" * 63 + "2@example.com"


def test_readdress_promotes_an_existing_secondary(site_a: AdminService) -> None:
    """An address the recipient already holds as a secondary becomes its primary: no counter."""
    site_a.add_recipient(
        MAILBOX, "jsmith", display_name="J", extra_addresses=["JSmith@Example.com"]
    )
    result = site_a.set_addressing("smtp", "@example.com", update_recipients=True)
    assert result.plan is not None
    assert result.plan.collisions == []
    assert proxies(site_a, "jsmith") == [
        "SMTP:jsmith@example.com",
        "smtp:jsmith@sitea.example.com",
    ]


# -- template only --------------------------------------------------------------------------------


def test_readdress_template_only_affects_new_recipients(populated: AdminService) -> None:
    """Without update_recipients existing recipients keep their addresses; new ones use it."""
    before = populated.list_recipients(None)
    result = populated.set_addressing("smtp", "@example.com", update_recipients=False)
    assert result.applied
    assert result.plan is None
    assert result.updated == 0
    assert populated.list_recipients(None) == before
    assert populated.addressing() == "%m@example.com"
    assert add_mailbox(populated, "mjones").primary_smtp == "mjones@example.com"


@pytest.mark.parametrize("template", ["example.com", "%q@example.com", "%m@bad_domain.example"])
def test_readdress_bad_template_changes_nothing(populated: AdminService, template: str) -> None:
    """A bad template is InvalidValueError (exit 65) and the site keeps its template."""
    mark = usn_counter(populated)
    with pytest.raises(InvalidValueError):
        populated.set_addressing("smtp", template, update_recipients=True)
    assert populated.addressing() == "%m@sitea.example.com"
    assert usn_counter(populated) == mark


def test_readdress_unknown_address_type_is_refused(populated: AdminService) -> None:
    """Only the `smtp` address type exists."""
    with pytest.raises(InvalidValueError, match="x400"):
        populated.set_addressing("x400", "@example.com", update_recipients=True)


# -- the index stays equal to the objects -------------------------------------------------------


def test_readdress_index_follows_every_kind_of_change(site_a: AdminService) -> None:
    """After keep-old, drop-old, promotions, counters and back again, index == proxies."""
    site_a.add_recipient(
        MAILBOX, "jsmith", display_name="John Smith", given_name="John", surname="Smith",
        extra_addresses=["John.Smith@example.com"],
    )  # fmt: skip
    add_mailbox(site_a, "jsmith2", given_name="Jane", surname="Smith")
    add_mailbox(site_a, "mjones", given_name="Mary", surname="Jones")
    site_a.add_recipient(CONTACT, "partner", display_name="P", target="p@partner.example")
    import_replica(site_a, "bsmith", "smith@example.com")
    steps = [
        ("%g.%s@example.com", False),  # promotes jsmith's secondary John.Smith@
        ("%s@example.com", False),  # smith@ held by SiteB: counters for both Smiths
        ("@example.com", True),  # drop the old primaries
        ("%1g%s@example.com", True),  # JSmith for two recipients: a counter in the same run
        ("@sitea.example.com", False),  # back home
        ("@SiteA.Example.com", False),  # same addresses: nothing changes
    ]
    for template, drop_old in steps:
        site_a.set_addressing("smtp", template, update_recipients=True, drop_old=drop_old)
        assert_index_matches_proxies(site_a)
        for r in site_a.list_recipients(None, site="SiteA"):
            assert sum(p.primary for p in r.proxies) == 1


def test_readdress_keeps_other_proxy_types(site_a: AdminService) -> None:
    """Non-SMTP proxies (an X.400 primary, say) are carried over and keep their index rows."""
    r = add_mailbox(site_a, "jsmith")
    x400 = "X400:c=US;a= ;p=ExchangeORG;o=SiteA;s=Smith;"
    with site_a.store.write() as conn:
        conn.execute(
            proxy_address.insert().values(
                address_key=x400[5:].lower(), address=x400[5:], domain="", guid=r.guid,
                type="X400", is_primary=True,
            )
        )  # fmt: skip
        conn.execute(
            readdress_module.dir_object.update()
            .where(readdress_module.dir_object.c.guid == r.guid)
            .values(attrs={"proxies": [*r.attrs["proxies"], x400]})
        )
    site_a.set_addressing("smtp", "@example.com", update_recipients=True)
    assert proxies(site_a, "jsmith") == [
        "SMTP:jsmith@example.com",
        "smtp:jsmith@sitea.example.com",
        x400,
    ]
    with site_a.store.read() as conn:
        row = conn.execute(
            select(proxy_address.c.is_primary).where(proxy_address.c.type == "X400")
        ).one()
    assert row.is_primary  # only SMTP primaries are demoted


def test_readdress_case_only_change_rewrites_the_spelling(site_a: AdminService) -> None:
    """A new primary equal to the old one but for case keeps its key and takes the new spelling."""
    add_mailbox(site_a, "jsmith", given_name="John", surname="Smith")
    site_a.set_addressing("smtp", "%s@sitea.example.com", update_recipients=True)
    assert site_a.get_recipient("jsmith").primary_smtp == "Smith@sitea.example.com"
    site_a.update_recipient("jsmith", RecipientChanges(surname="SMITH"))
    result = site_a.set_addressing("smtp", "%s@sitea.example.com", update_recipients=True)
    assert result.updated == 1
    assert proxies(site_a, "jsmith") == [
        "SMTP:SMITH@sitea.example.com",
        "smtp:jsmith@sitea.example.com",
    ]
    owner = site_a.directory.lookup("smith@sitea.example.com")
    assert owner is not None
    assert (owner.address, owner.is_primary) == ("SMITH@sitea.example.com", True)
    assert_index_matches_proxies(site_a)


# -- the SQLite driver path and the portable SQLAlchemy path agree ------------------------------


def varied_directory(site: AdminService) -> None:
    """Recipients of every kind with the cases re-addressing distinguishes."""
    site.add_recipient(
        MAILBOX, "jsmith", display_name="John Smith", given_name="John", surname="Smith",
        extra_addresses=["John.Smith@example.com", "john@legacy.example"],
    )  # fmt: skip
    add_mailbox(site, "jsmith2", given_name="Jane", surname="Smith")
    add_mailbox(site, "mjones", given_name="Mary", surname="Jones", name="Mary Jones (Sales)")
    add_mailbox(site, "x" * 64, given_name="José", surname="Müller")
    add_mailbox(site, "dup.smith", given_name="", surname="Smith")
    add_mailbox(site, "gone")
    site.remove_recipient("gone")
    site.add_recipient(CONTACT, "partner", display_name="P", target="p@partner.example")
    site.add_recipient(GROUP, "staff", display_name="Staff", members=["jsmith", "mjones"])
    import_replica(site, "bsmith", "smith@example.com")
    import_replica(site, "held", "staff@example.com")


def directory_state(site: AdminService) -> tuple[object, ...]:
    """Everything re-addressing writes, with guids replaced by aliases (copies share them)."""
    recipients = site.directory.list_recipients(None, include_deleted=True)
    with site.store.read() as conn:
        c = proxy_address.c
        index = conn.execute(select(c.address_key, c.address, c.domain, c.guid, c.type,
                                    c.is_primary)).all()  # fmt: skip
    return (
        sorted(
            (r.alias, r.site, r.attrs, r.usn_changed, r.version, r.is_deleted) for r in recipients
        ),
        sorted(tuple(row) for row in index),
        usn_counter(site),
        site.addressing(),
    )


@pytest.mark.sqlite_only  # compares the SQLite fast path with the portable one
@pytest.mark.parametrize(
    ("template", "drop_old"),
    [
        ("@example.com", False),
        ("@example.com", True),
        ("%1g%s@example.com", False),
        ("%g.%s@example.com", False),  # promotes jsmith's secondary
        ("%s@example.com", True),  # counters against SiteB and within the run
        ("%r .%d@sitea.example.com", False),
    ],
)
def test_readdress_driver_and_portable_paths_agree(
    site_a: AdminService,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    template: str,
    drop_old: bool,
) -> None:
    """The SQLite fast path (driver, rowids, json_set) and the SQLAlchemy path used on other
    databases write the same directory, report the same plan and the same collisions."""
    varied_directory(site_a)
    site_a.close()
    results = []
    for driver in (True, False):
        monkeypatch.setattr(readdress_module, "_driver_path", lambda _conn, d=driver: d)
        copy = AdminService.open(
            Path(shutil.copytree(tmp_path / "SiteA", tmp_path / f"copy-{driver}"))
        )
        try:
            result = copy.set_addressing(
                "smtp", template, update_recipients=True, drop_old=drop_old
            )
            assert result.plan is not None
            assert_index_matches_proxies(copy)
            results.append((result.updated, result.plan.changes, result.plan.collisions,
                            directory_state(copy)))  # fmt: skip
        finally:
            copy.close()
    assert results[0] == results[1]


def set_attrs(site: AdminService, alias: str, attrs_json: str) -> None:
    """Store a recipient's attributes as this exact JSON text (as another writer might)."""
    with site.store.write() as conn:
        conn.exec_driver_sql(
            "UPDATE dir_object SET attrs = ? WHERE name = ? AND site = 'SiteA'", (attrs_json, alias)
        )


def common_directory(site: AdminService) -> None:
    """Recipients of every kind that the set-based path takes: no collision, plain aliases,
    proxy lists of SMTP strings only (in both JSON spellings), a tombstone and a replica."""
    site.add_recipient(
        MAILBOX, "jsmith", display_name="John Smith", given_name="John", surname="Smith",
        extra_addresses=["john@legacy.example", "John.Smith@sitea.example.com"],
    )  # fmt: skip
    add_mailbox(site, "Mary.Jones", given_name="Mary", surname="Jones")
    add_mailbox(site, "gone")
    site.remove_recipient("gone")
    add_mailbox(site, "o_brien-x")
    site.add_recipient(CONTACT, "partner", display_name="P", target="p@partner.example")
    site.add_recipient(GROUP, "staff", display_name="Staff", members=["jsmith", "partner"])
    import_replica(site, "bsmith", "bsmith@example.com")
    # Two primaries, a secondary first, compact JSON as SQLite writes it.
    set_attrs(site, "partner", '{"target":"p@partner.example","proxies":'
              '["smtp:p2@legacy.example","SMTP:partner@sitea.example.com","SMTP:p@legacy.example"]}')  # fmt: skip
    with site.store.write() as conn:
        guid = conn.exec_driver_sql("SELECT guid FROM dir_object WHERE name = 'partner'").scalar()
        conn.exec_driver_sql("DELETE FROM proxy_address WHERE guid = ?", (guid,))
        conn.exec_driver_sql(
            "INSERT INTO proxy_address VALUES (?, ?, ?, ?, 'SMTP', ?)",
            [
                ("p2@legacy.example", "p2@legacy.example", "legacy.example", guid, 0),
                ("partner@sitea.example.com", "partner@sitea.example.com", "sitea.example.com",
                 guid, 1),
                ("p@legacy.example", "p@legacy.example", "legacy.example", guid, 1),
            ],
        )  # fmt: skip


def _x400(site: AdminService) -> None:
    r = add_mailbox(site, "xuser")
    with site.store.write() as conn:
        conn.execute(
            proxy_address.insert().values(
                address_key="c=us;s=x;", address="c=US;s=X;", domain="", guid=r.guid,
                type="X400", is_primary=True,
            )
        )  # fmt: skip
        conn.execute(
            readdress_module.dir_object.update()
            .where(readdress_module.dir_object.c.guid == r.guid)
            .values(attrs={"proxies": [*r.attrs["proxies"], "X400:c=US;s=X;"]})
        )


def _escaped(site: AdminService) -> None:
    site.add_recipient(MAILBOX, "jose", display_name="J", extra_addresses=["josé@legacy.example"])


def _dotted(site: AdminService) -> None:
    add_mailbox(site, "j..smith")  # not a dot-atom: expansion cleans it


def _collision(site: AdminService) -> None:
    import_replica(site, "held", "staff@example.com")


def _promotion(site: AdminService) -> None:
    site.add_recipient(MAILBOX, "amy", display_name="A", extra_addresses=["Amy@Example.com"])


def _no_proxies(site: AdminService) -> None:
    add_mailbox(site, "empty")
    set_attrs(site, "empty", '{"proxies": []}')
    with site.store.write() as conn:
        conn.exec_driver_sql(
            "DELETE FROM proxy_address WHERE guid = "
            "(SELECT guid FROM dir_object WHERE name = 'empty')"
        )


@pytest.mark.sqlite_only  # SQLite's set-based path and pragmas
@pytest.mark.parametrize(
    ("template", "drop_old", "extra", "bulk"),
    [
        ("@example.com", False, None, True),
        ("@Example.COM", False, None, True),
        ("%m@example.com", False, _x400, False),  # another proxy type
        ("@example.com", False, _escaped, False),  # JSON escapes in a proxy list
        ("@example.com", False, _dotted, False),  # an alias that is not its own local part
        ("@example.com", False, _collision, False),
        ("@example.com", False, _promotion, False),
        ("@example.com", False, _no_proxies, False),
        ("@example.com", True, None, False),  # drop_old
        ("%1g%s@example.com", False, None, False),
    ],
)
@pytest.mark.parametrize("batch", [1, 2000])
def test_readdress_set_based_and_portable_paths_agree(
    site_a: AdminService,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    template: str,
    drop_old: bool,
    extra: object,
    bulk: bool,
    batch: int,
) -> None:
    """The common case is written set-based in SQL (SQLite); it writes the same directory and
    reports the same plan as the portable path, and anything outside it is planned per row."""
    monkeypatch.setattr(readdress_module, "_BATCH", batch)
    common_directory(site_a)
    if callable(extra):
        extra(site_a)
    site_a.close()
    results = []
    for driver in (True, False):
        monkeypatch.setattr(readdress_module, "_driver_path", lambda _conn, d=driver: d)
        copy = AdminService.open(
            Path(shutil.copytree(tmp_path / "SiteA", tmp_path / f"copy-{driver}"))
        )
        try:
            advanced: list[int] = []
            result = copy.set_addressing(
                "smtp", template, update_recipients=True, drop_old=drop_old,
                progress_total=lambda _total, seen=advanced: seen.append,
            )  # fmt: skip
            assert result.plan is not None
            assert (result.plan.bulk is not None) == (bulk and driver)
            assert sum(advanced) == result.updated == result.plan.changed_count
            assert_index_matches_proxies(copy)
            results.append((result.updated, result.plan.changes, result.plan.collisions,
                            directory_state(copy)))  # fmt: skip
        finally:
            copy.close()
    assert results[0] == results[1]


@pytest.mark.sqlite_only  # SQLite's set-based path and pragmas
def test_readdress_set_based_keeps_old_primaries(site_a: AdminService) -> None:
    """What the set-based path writes, spelled out: new primary first, every old SMTP primary
    a secondary in its place, other secondaries unchanged, one USN each, index updated."""
    common_directory(site_a)
    mark = usn_counter(site_a)
    result = site_a.set_addressing("smtp", "@example.com", update_recipients=True)
    assert result.plan is not None
    assert result.plan.bulk is not None
    assert result.updated == 5
    assert proxies(site_a, "jsmith") == [
        "SMTP:jsmith@example.com",
        "smtp:jsmith@sitea.example.com",
        "smtp:john@legacy.example",
        "smtp:John.Smith@sitea.example.com",
    ]
    assert proxies(site_a, "partner") == [
        "SMTP:partner@example.com",
        "smtp:p2@legacy.example",
        "smtp:partner@sitea.example.com",
        "smtp:p@legacy.example",
    ]
    assert proxies(site_a, "Mary.Jones") == [
        "SMTP:Mary.Jones@example.com",
        "smtp:Mary.Jones@sitea.example.com",
    ]
    owner = site_a.directory.lookup("mary.jones@EXAMPLE.com")
    assert owner is not None
    assert (owner.alias, owner.address, owner.is_primary) == (
        "Mary.Jones",
        "Mary.Jones@example.com",
        True,
    )
    assert usn_counter(site_a) == mark + 1 + 5
    changes = site_a.directory.changes_since("SiteA", mark + 1)
    assert [c.alias for c in changes] == ["jsmith", "Mary.Jones", "o_brien-x", "partner", "staff"]
    assert [c.usn_changed for c in changes] == list(range(mark + 2, mark + 7))
    assert_index_matches_proxies(site_a)


@pytest.mark.sqlite_only  # SQLite's set-based path and pragmas
def test_readdress_set_based_dry_run_then_run(site_a: AdminService) -> None:
    """A dry run of the set-based path leaves nothing behind (its staging table included), and
    the real run after it on the same pooled connection does the work."""
    common_directory(site_a)
    before = site_a.list_recipients(None)
    dry = site_a.set_addressing("smtp", "@example.com", update_recipients=True, dry_run=True)
    assert dry.plan is not None
    assert dry.plan.bulk is not None
    assert site_a.list_recipients(None) == before
    assert {c.recipient.alias: c.new_primary for c in dry.plan.changed} == {
        "jsmith": "jsmith@example.com",
        "Mary.Jones": "Mary.Jones@example.com",
        "o_brien-x": "o_brien-x@example.com",
        "partner": "partner@example.com",
        "staff": "staff@example.com",
    }
    result = site_a.set_addressing("smtp", "@example.com", update_recipients=True)
    assert result.updated == 5
    assert [c.new_proxies for c in result.plan.changed] == [  # type: ignore[union-attr]
        c.new_proxies for c in dry.plan.changed
    ]
    with site_a.store.read() as conn:
        staged = conn.exec_driver_sql(
            "SELECT count(*) FROM sqlite_temp_master WHERE name = 'sitemail_readdress'"
        ).scalar()
    assert staged == 0


@pytest.mark.sqlite_only  # SQLite's set-based path and pragmas
def test_readdress_restores_the_page_cache_setting(populated: AdminService) -> None:
    """The bigger cache of the bulk write is the transaction's only: pooled connections keep
    the configured 32 MiB."""
    populated.set_addressing("smtp", "@example.com", update_recipients=True)
    with populated.store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -32768


@pytest.mark.sqlite_only  # SQLite's set-based path and pragmas
def test_readdress_leaves_foreign_keys_checked_and_whole(populated: AdminService) -> None:
    """The re-addressing transaction skips SQLite's per-row parent lookups; every index row
    still has its object, and pooled connections check foreign keys again afterwards."""
    populated.set_addressing("smtp", "@example.com", update_recipients=True)
    with populated.store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
