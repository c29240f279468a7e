"""Directory export and import as JSON lines: round trip, idempotence, all-or-nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.support.databases import new_database_url

from sitemail.admin.service import AdminService
from sitemail.core import DuplicateAddressError, InvalidValueError, SitemailError
from sitemail.directory import ObjectKind, RecipientChanges

MAILBOX, CONTACT, GROUP = ObjectKind.MAILBOX, ObjectKind.CONTACT, ObjectKind.GROUP
SECRET = "$scrypt$ln=15,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo"
FIELDS = {
    "guid",
    "site",
    "kind",
    "name",
    "display_name",
    "attrs",
    "usn_changed",
    "version",
    "is_deleted",
}


@pytest.fixture
def populated(site_a: AdminService) -> AdminService:
    """SiteA with two mailboxes (one with a password), a contact, a group and a tombstone."""
    site_a.directory.add_recipient(  # a stand-in hash: real scrypt costs ~100 ms per fixture
        MAILBOX, "jsmith", display_name="John Smith", given_name="John", password_hash=SECRET
    )
    site_a.add_recipient(MAILBOX, "mjones", display_name="Mary Jones")
    site_a.add_recipient(CONTACT, "partner", display_name="Partner", target="p@partner.example")
    site_a.add_recipient(GROUP, "staff", display_name="Staff", members=["jsmith", "mjones"])
    site_a.add_recipient(MAILBOX, "gone", display_name="Gone")
    site_a.remove_recipient("gone")
    return site_a


@pytest.fixture
def site_b(tmp_path: Path) -> Any:
    """SiteB of the same organisation, in its own data dir."""
    service = AdminService.init(
        tmp_path / "SiteB",
        org="ExchangeORG",
        site="SiteB",
        server="ServerB",
        domain="siteb.example.com",
        listen=["127.0.0.2"],
        database_url=new_database_url(),
    )
    yield service
    service.close()


def records(site: AdminService) -> list[dict[str, Any]]:
    return [json.loads(line) for line in site.export_directory()]


def line(**changes: Any) -> str:
    """A valid replica record of SiteC, with `changes` applied."""
    record: dict[str, Any] = {
        "guid": "guid-c1",
        "site": "SiteC",
        "kind": "mailbox",
        "name": "csmith",
        "display_name": "C Smith",
        "attrs": {"proxies": ["SMTP:csmith@sitec.example.com"]},
        "usn_changed": 3,
        "version": 1,
        "is_deleted": False,
    }
    return json.dumps(record | changes)


# -- export ----------------------------------------------------------------------------------------


def test_export_writes_one_json_object_per_directory_object(populated: AdminService) -> None:
    """Every object (site, server, addressing, recipients, tombstones) is one JSON line."""
    exported = records(populated)
    assert all(set(r) == FIELDS for r in exported)
    kinds = sorted(r["kind"] for r in exported)
    assert kinds == sorted(
        ["site", "server", "site_addressing", "mailbox", "mailbox", "mailbox", "contact", "group"]
    )
    tombstones = [r for r in exported if r["is_deleted"]]
    assert [(t["name"], t["attrs"]) for t in tombstones] == [
        ("gone", {"deleted_kind": "mailbox", "released": ["gone@sitea.example.com"]})
    ]


def test_export_never_contains_secrets(populated: AdminService) -> None:
    """Password hashes stay in their own table: the export holds neither hash nor password."""
    assert populated.directory.password_hash(populated.get_recipient("jsmith").guid) == SECRET
    text = "\n".join(populated.export_directory())
    assert "$scrypt$" not in text
    assert "password" not in text


def test_export_is_ordered_by_usn(populated: AdminService) -> None:
    """Objects of a site come out in USN order, so an import replays changes in order."""
    usns = [r["usn_changed"] for r in records(populated)]
    assert usns == sorted(usns)


# -- import ----------------------------------------------------------------------------------------


def test_import_into_the_same_directory_changes_nothing(populated: AdminService) -> None:
    """Importing an export back is a no-op: every object unchanged, no USN taken."""
    lines = list(populated.export_directory())
    mark = populated.directory.highest_usn()
    report = populated.import_directory(lines)
    assert (report.created, report.updated, report.unchanged) == (0, 0, len(lines))
    assert populated.directory.highest_usn() == mark
    assert list(populated.export_directory()) == lines


def test_import_round_trip_into_another_site(populated: AdminService, site_b: AdminService) -> None:
    """SiteB imports SiteA's export: the same objects, as read-only replicas with SiteA's USNs."""
    lines = list(populated.export_directory())
    report = site_b.import_directory(lines)
    assert (report.created, report.updated, report.unchanged) == (len(lines), 0, 0)
    replicas = [r for r in records(site_b) if r["site"] == "SiteA"]
    assert replicas == records(populated)
    owner = site_b.directory.lookup("JSmith@SiteA.example.com")
    assert owner is not None
    assert (owner.alias, owner.site) == ("jsmith", "SiteA")
    assert site_b.directory.lookup("gone@sitea.example.com") is None  # a tombstone holds nothing
    staff = site_b.get_recipient("staff@sitea.example.com")
    assert [m.alias for m in site_b.members(staff)] == ["jsmith", "mjones"]


def test_import_second_time_is_all_unchanged(populated: AdminService, site_b: AdminService) -> None:
    """Import is idempotent: the second import of the same lines changes nothing."""
    lines = list(populated.export_directory())
    site_b.import_directory(lines)
    before = list(site_b.export_directory())
    report = site_b.import_directory(lines)
    assert (report.created, report.updated, report.unchanged) == (0, 0, len(lines))
    assert list(site_b.export_directory()) == before


def test_import_newer_version_replaces_older(site_a: AdminService) -> None:
    """A higher version replaces the object and its index entries."""
    site_a.import_directory([line()])
    report = site_a.import_directory(
        [line(version=2, attrs={"proxies": ["SMTP:carl@sitec.example.com"]}, usn_changed=9)]
    )
    assert (report.created, report.updated, report.unchanged) == (0, 1, 0)
    assert site_a.directory.lookup("csmith@sitec.example.com") is None
    owner = site_a.directory.lookup("carl@sitec.example.com")
    assert owner is not None
    assert owner.alias == "csmith"
    assert site_a.directory.highest_usn("SiteC") == 9


def test_import_older_version_never_overwrites(site_a: AdminService) -> None:
    """An export taken before a local change does not undo that change."""
    site_a.add_recipient(MAILBOX, "jsmith", display_name="John")
    old = list(site_a.export_directory())
    site_a.update_recipient("jsmith", RecipientChanges(display_name="John Smith"))
    report = site_a.import_directory(old)
    assert report.updated == 0
    assert site_a.get_recipient("jsmith").display_name == "John Smith"


def test_import_of_a_changed_local_object_takes_a_local_usn(site_a: AdminService) -> None:
    """A changed object of this site gets this site's next USN, not the one in the file."""
    r = site_a.add_recipient(MAILBOX, "jsmith", display_name="John")
    (record,) = [x for x in records(site_a) if x["guid"] == r.guid]
    mark = site_a.directory.highest_usn()
    record |= {"version": 5, "usn_changed": 1, "display_name": "Imported"}
    record["attrs"] = {**record["attrs"], "surname": "Smith"}
    assert site_a.import_directory([json.dumps(record)]).updated == 1
    now = site_a.get_recipient("jsmith")
    assert (now.display_name, now.surname, now.version) == ("Imported", "Smith", 5)
    assert now.usn_changed == mark + 1


def test_import_tombstone_releases_the_replicas_addresses(site_a: AdminService) -> None:
    """A newer tombstone of a replica removes its addresses from the index."""
    site_a.import_directory([line()])
    site_a.import_directory(
        [line(version=2, is_deleted=True, attrs={"deleted_kind": "mailbox"}, usn_changed=4)]
    )
    assert site_a.directory.lookup("csmith@sitec.example.com") is None
    assert site_a.list_recipients(None) == []


def test_import_skips_blank_lines(site_a: AdminService) -> None:
    """Empty lines (a trailing newline, say) are ignored."""
    report = site_a.import_directory(["", line(), "   \n"])
    assert (report.created, report.updated, report.unchanged) == (1, 0, 0)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"guid": "x"}', "missing field"),
        (line(kind="printer"), "unknown kind"),
        (line(attrs=[]), "attrs"),
        (line(version="2"), "version"),
        (line(guid=None), "guid"),
        (line(name=None), "name"),
        (line(site=7), "site"),
        (line(display_name=["x"]), "display_name"),
        (line(usn_changed="3"), "usn_changed"),
        (line(is_deleted="no"), "is_deleted"),
        (line(attrs={"proxies": "SMTP:csmith@sitec.example.com"}), "proxies"),
        (line(attrs={"proxies": [1]}), "proxies"),
        (line(attrs={"proxies": ["SMTP:not an address"]}), "not an address"),
    ],
)
def test_import_bad_line_is_refused_with_its_number(
    site_a: AdminService, bad: str, message: str
) -> None:
    """A malformed line is InvalidValueError naming its line number and the problem."""
    good = line(guid="guid-ok", name="ok", attrs={"proxies": ["SMTP:ok@sitec.example.com"]})
    with pytest.raises(InvalidValueError, match=message) as caught:
        site_a.import_directory([good, bad])
    assert caught.value.message.startswith("line 2:")


def test_import_bad_line_aborts_the_whole_import(site_a: AdminService) -> None:
    """Lines before a bad one are not applied either: all or nothing."""
    second = line(guid="guid-c2", name="c2", attrs={"proxies": ["SMTP:c2@sitec.example.com"]})
    lines = [line(), second, "{broken"]
    mark = site_a.directory.highest_usn("SiteC")
    with pytest.raises(InvalidValueError, match="line 3"):
        site_a.import_directory(lines)
    assert site_a.list_recipients(None) == []
    assert site_a.directory.lookup("csmith@sitec.example.com") is None
    assert site_a.directory.highest_usn("SiteC") == mark


def test_import_address_clash_aborts_with_line_number(site_a: AdminService) -> None:
    """An object whose address another recipient holds is DuplicateAddressError, nothing kept."""
    site_a.add_recipient(MAILBOX, "jsmith", display_name="J")
    clash = line(attrs={"proxies": ["SMTP:JSmith@SiteA.example.com"]})
    with pytest.raises(DuplicateAddressError, match="line 2"):
        site_a.import_directory([line(guid="guid-c2", name="c2", attrs={}), clash])
    assert [r.alias for r in site_a.list_recipients(None)] == ["jsmith"]


def test_import_errors_are_sitemail_errors(site_a: AdminService) -> None:
    """Whatever is wrong with a line, the CLI gets a SitemailError to report (never a crash)."""
    for bad in ("{}", line(attrs={"proxies": [None]}), line(attrs={"members": "x"})):
        with pytest.raises(SitemailError):
            site_a.import_directory([bad])


def test_import_restore_into_fresh_site_keeps_the_exported_addressing(
    site_a: AdminService, tmp_path: Path
) -> None:
    """A backup restored into a new data dir of the same site brings back its Site Addressing."""
    site_a.set_addressing("smtp", "@example.com", update_recipients=True)
    lines = list(site_a.export_directory())
    fresh = AdminService.init(
        tmp_path / "Restored",
        org="ExchangeORG",
        site="SiteA",
        server="ServerA",
        domain="sitea.example.com",
        listen=["127.0.0.1"],
        database_url=new_database_url(),
    )
    try:
        fresh.import_directory(lines)
        assert len(fresh.directory.list_objects(ObjectKind.SITE_ADDRESSING)) == 1
        assert fresh.addressing() == "%m@example.com"
        assert len(fresh.directory.list_objects(ObjectKind.SITE)) == 1
        assert len(fresh.directory.list_objects(ObjectKind.SERVER)) == 1
        key = fresh.site_key()[0]  # the restored data dir keeps its own key pair
        assert fresh.directory.site_object().attrs["public_key"] == key
    finally:
        fresh.close()
