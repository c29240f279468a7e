"""The directory service: objects and kinds, USNs, tombstones and unique proxy addresses."""

from __future__ import annotations

import json

import pytest

from sitemail.admin.service import AdminService
from sitemail.core import (
    ConflictError,
    DuplicateAddressError,
    InvalidAddressError,
    InvalidValueError,
    NotFoundError,
    PermissionDeniedError,
)
from sitemail.directory import ObjectKind, Recipient, RecipientChanges

MAILBOX, CONTACT, GROUP = ObjectKind.MAILBOX, ObjectKind.CONTACT, ObjectKind.GROUP


def add_mailbox(site: AdminService, alias: str, **kwargs: str) -> Recipient:
    return site.add_recipient(MAILBOX, alias, display_name=kwargs.pop("name", alias), **kwargs)


def replica_line(alias: str, address: str, *, site: str = "SiteB", usn: int = 7) -> str:
    """An export line for a mailbox owned by another site (a read-only replica here)."""
    return json.dumps(
        {
            "guid": f"guid-{alias}",
            "site": site,
            "kind": "mailbox",
            "name": alias,
            "display_name": alias,
            "attrs": {"proxies": [f"SMTP:{address}"]},
            "usn_changed": usn,
            "version": 1,
            "is_deleted": False,
        }
    )


# -- the organisation ------------------------------------------------------------------------


def test_directory_init_creates_org_site_server_and_addressing(site_a: AdminService) -> None:
    """`init` writes the organisation, its site, its server and the site's Site Addressing."""
    d = site_a.directory
    info = d.org()
    assert (info.name, info.local_site, info.local_server) == ("ExchangeORG", "SiteA", "ServerA")
    assert [s.alias for s in d.list_objects(ObjectKind.SITE)] == ["SiteA"]
    assert [s.alias for s in d.list_objects(ObjectKind.SERVER)] == ["ServerA"]
    assert d.list_objects(ObjectKind.SERVER)[0].attrs["listen"] == ["127.0.0.1"]
    assert str(d.template()) == "%m@sitea.example.com"


def test_directory_init_twice_is_a_conflict(site_a: AdminService) -> None:
    """A data dir holds one organisation; a second initialisation is refused."""
    with pytest.raises(ConflictError):
        site_a.directory.initialize(
            org="Other", site="SiteX", server="ServerX", domain="x.example", listen=["127.0.0.1"]
        )


# -- recipients of each kind ------------------------------------------------------------------


def test_directory_mailbox_is_addressed_by_the_site_template(site_a: AdminService) -> None:
    """A new mailbox belongs to this site and gets its primary from the template."""
    r = add_mailbox(site_a, "jsmith", name="John Smith", given_name="John", surname="Smith")
    assert (r.kind, r.site, r.alias, r.display_name) == (MAILBOX, "SiteA", "jsmith", "John Smith")
    assert (r.given_name, r.surname) == ("John", "Smith")
    assert r.attrs["proxies"] == ["SMTP:jsmith@sitea.example.com"]
    assert r.version == 1
    assert site_a.get_recipient("jsmith") == r


def test_directory_display_name_defaults_to_alias(site_a: AdminService) -> None:
    """An empty display name falls back to the alias."""
    assert site_a.add_recipient(MAILBOX, "jsmith", display_name="").display_name == "jsmith"


def test_directory_extra_addresses_are_secondaries(site_a: AdminService) -> None:
    """Addresses given at creation are accepted as `smtp:` secondaries."""
    r = site_a.add_recipient(
        MAILBOX, "jsmith", display_name="J", extra_addresses=["John.Smith@Example.com"]
    )
    assert r.attrs["proxies"] == [
        "SMTP:jsmith@sitea.example.com",
        "smtp:John.Smith@example.com",
    ]


def test_directory_contact_keeps_its_target(site_a: AdminService) -> None:
    """A contact has an external target (normalised) and an address in the site's domain."""
    c = site_a.add_recipient(CONTACT, "partner", display_name="P", target="Bob@Partner.Example")
    assert c.kind is CONTACT
    assert c.target == "Bob@partner.example"
    assert c.primary_smtp == "partner@sitea.example.com"
    assert site_a.directory.lookup("bob@partner.example") is None  # the target is not ours


@pytest.mark.parametrize("target", ["", "not an address", "bob@", "bob@bad_domain.example"])
def test_directory_contact_with_invalid_target_is_refused(
    site_a: AdminService, target: str
) -> None:
    """A contact's target must be a valid address (exit 65)."""
    with pytest.raises(InvalidAddressError):
        site_a.add_recipient(CONTACT, "partner", display_name="P", target=target)
    assert site_a.list_recipients(None) == []


def test_directory_contact_target_can_change(site_a: AdminService) -> None:
    """`target` is editable on contacts, and only on contacts."""
    site_a.add_recipient(CONTACT, "partner", display_name="P", target="a@partner.example")
    changed = site_a.update_recipient("partner", RecipientChanges(target="b@partner.example"))
    assert changed.target == "b@partner.example"
    add_mailbox(site_a, "jsmith")
    with pytest.raises(InvalidValueError):
        site_a.update_recipient("jsmith", RecipientChanges(target="b@partner.example"))


def test_directory_group_holds_members_by_guid(site_a: AdminService) -> None:
    """Group members are stored as guids and listed as recipients, sorted by alias."""
    b = add_mailbox(site_a, "bob")
    a = add_mailbox(site_a, "alice")
    c = site_a.add_recipient(CONTACT, "partner", display_name="P", target="x@partner.example")
    g = site_a.add_recipient(GROUP, "staff", display_name="Staff", members=["bob", "alice", c.guid])
    assert g.members == [b.guid, a.guid, c.guid]
    assert [m.alias for m in site_a.members(g)] == ["alice", "bob", "partner"]


def test_directory_group_members_change(site_a: AdminService) -> None:
    """Members are added (once) and removed by any reference; a group may hold a group."""
    add_mailbox(site_a, "alice")
    add_mailbox(site_a, "bob")
    site_a.add_recipient(GROUP, "sales", display_name="Sales")
    site_a.add_recipient(GROUP, "staff", display_name="Staff", members=["alice"])
    g = site_a.set_members("staff", add=["bob", "alice", "sales"], remove=["alice"])
    assert [m.alias for m in site_a.members(g)] == ["bob", "sales"]


def test_directory_group_cannot_contain_itself(site_a: AdminService) -> None:
    """Adding a group to itself is refused."""
    site_a.add_recipient(GROUP, "staff", display_name="Staff")
    with pytest.raises(InvalidValueError):
        site_a.set_members("staff", add=["staff"], remove=[])


def test_directory_group_unknown_member_is_not_found(site_a: AdminService) -> None:
    """An unknown member (at creation or later) is NotFoundError and nothing is written."""
    with pytest.raises(NotFoundError):
        site_a.add_recipient(GROUP, "staff", display_name="Staff", members=["nobody"])
    assert site_a.list_recipients(GROUP) == []
    site_a.add_recipient(GROUP, "staff", display_name="Staff")
    with pytest.raises(NotFoundError):
        site_a.set_members("staff", add=[], remove=["nobody"])


def test_directory_group_removing_a_non_member_is_not_found(site_a: AdminService) -> None:
    """Removing a recipient that is not a member says so."""
    add_mailbox(site_a, "alice")
    site_a.add_recipient(GROUP, "staff", display_name="Staff")
    with pytest.raises(NotFoundError):
        site_a.set_members("staff", add=[], remove=["alice"])


@pytest.mark.parametrize("alias", ["", "john smith", "jsmith@example.com", "jösmith", "x" * 65])
def test_directory_invalid_alias_is_refused(site_a: AdminService, alias: str) -> None:
    """Aliases are 1-64 ASCII letters, digits, '.', '-', '_' (exit 65)."""
    with pytest.raises(InvalidValueError):
        add_mailbox(site_a, alias)


def test_directory_alias_is_unique_in_the_site_ignoring_case(site_a: AdminService) -> None:
    """A second recipient of any kind with the same alias (any case) is a conflict (73)."""
    add_mailbox(site_a, "jsmith")
    with pytest.raises(ConflictError):
        add_mailbox(site_a, "JSmith")
    with pytest.raises(ConflictError):
        site_a.add_recipient(GROUP, "jsmith", display_name="G")


def test_directory_get_finds_by_alias_address_or_guid(site_a: AdminService) -> None:
    """A recipient is named by its alias (any case), any of its addresses, or its guid."""
    r = site_a.add_recipient(MAILBOX, "jsmith", display_name="J", extra_addresses=["js@x.example"])
    for ref in ("jsmith", "JSMITH", "jsmith@sitea.example.com", "JS@X.example", r.guid):
        assert site_a.get_recipient(ref).guid == r.guid


def test_directory_get_with_wrong_kind_is_not_found(site_a: AdminService) -> None:
    """Asking for a contact by a mailbox's alias is NotFoundError (exit 66)."""
    add_mailbox(site_a, "jsmith")
    with pytest.raises(NotFoundError):
        site_a.get_recipient("jsmith", CONTACT)


def test_directory_get_unknown_is_not_found(site_a: AdminService) -> None:
    """An unknown reference is NotFoundError."""
    with pytest.raises(NotFoundError):
        site_a.get_recipient("nobody@sitea.example.com")


def test_directory_list_recipients_filters_by_kind(site_a: AdminService) -> None:
    """Listing by kind returns only that kind, sorted by alias; sites are not recipients."""
    add_mailbox(site_a, "zed")
    add_mailbox(site_a, "amy")
    site_a.add_recipient(GROUP, "staff", display_name="Staff")
    assert [r.alias for r in site_a.list_recipients(MAILBOX)] == ["amy", "zed"]
    assert [r.alias for r in site_a.list_recipients(None)] == ["amy", "staff", "zed"]


# -- naming contexts and USNs -----------------------------------------------------------------


def test_usn_every_change_takes_a_higher_usn(site_a: AdminService) -> None:
    """Create, update, membership change, re-template and delete each bump the site's USN."""
    d = site_a.directory
    seen = [d.highest_usn()]
    add_mailbox(site_a, "alice")
    seen.append(d.highest_usn())
    site_a.add_recipient(GROUP, "staff", display_name="Staff")
    seen.append(d.highest_usn())
    site_a.update_recipient("alice", RecipientChanges(display_name="Alice"))
    seen.append(d.highest_usn())
    site_a.set_members("staff", add=["alice"], remove=[])
    seen.append(d.highest_usn())
    site_a.set_addressing("smtp", "@example.com", update_recipients=False)
    seen.append(d.highest_usn())
    site_a.remove_recipient("alice")
    seen.append(d.highest_usn())
    assert seen == sorted(set(seen)), seen  # strictly increasing, never reused


def test_usn_of_object_is_its_last_change(site_a: AdminService) -> None:
    """An object's usn_changed is the USN of its latest change, and its version counts changes."""
    r = add_mailbox(site_a, "alice")
    r2 = site_a.update_recipient("alice", RecipientChanges(display_name="Alice A."))
    assert r2.usn_changed > r.usn_changed
    assert r2.version == r.version + 1
    assert site_a.get_recipient("alice").usn_changed == r2.usn_changed


def test_usn_changes_since_returns_objects_in_usn_order(site_a: AdminService) -> None:
    """changes_since(site, usn) yields the objects changed after `usn`, oldest change first."""
    d = site_a.directory
    mark = d.highest_usn()
    add_mailbox(site_a, "alice")
    add_mailbox(site_a, "bob")
    site_a.update_recipient("alice", RecipientChanges(display_name="Alice"))
    changes = d.changes_since("SiteA", mark)
    assert [c.alias for c in changes] == ["bob", "alice"]  # alice's latest change is newest
    assert [c.usn_changed for c in changes] == sorted(c.usn_changed for c in changes)
    assert len(d.changes_since("SiteA", 0, limit=2)) == 2
    assert d.changes_since("SiteA", d.highest_usn()) == []


def test_usn_counters_are_per_site(site_a: AdminService) -> None:
    """A replica of another site keeps its owner's USN and does not move this site's counter."""
    d = site_a.directory
    mark = d.highest_usn()
    site_a.import_directory([replica_line("bsmith", "bsmith@siteb.example.com", usn=1000)])
    assert d.highest_usn("SiteB") == 1000
    assert d.highest_usn() == mark
    assert add_mailbox(site_a, "alice").usn_changed == mark + 1


def test_usn_replica_of_another_site_is_read_only(site_a: AdminService) -> None:
    """Objects of another site's naming context cannot be changed or deleted here (exit 77)."""
    site_a.import_directory([replica_line("bsmith", "bsmith@siteb.example.com")])
    assert site_a.get_recipient("bsmith").site == "SiteB"
    with pytest.raises(PermissionDeniedError):
        site_a.update_recipient("bsmith", RecipientChanges(display_name="B"))
    with pytest.raises(PermissionDeniedError):
        site_a.remove_recipient("bsmith")


# -- tombstones -------------------------------------------------------------------------------


def test_tombstone_remove_leaves_a_deleted_row_with_a_new_usn(site_a: AdminService) -> None:
    """A removed recipient stays as a tombstone: guid, alias and site kept, new USN, and of its
    attributes only the addresses it gave up (routing waits for mail to them for a while)."""
    r = add_mailbox(site_a, "jsmith", given_name="John")
    t = site_a.remove_recipient("jsmith")
    assert t.is_deleted
    assert (t.guid, t.alias, t.site, t.kind) == (r.guid, "jsmith", "SiteA", MAILBOX)
    assert t.usn_changed > r.usn_changed
    assert t.version == r.version + 1
    assert t.attrs == {"deleted_kind": "mailbox", "released": ["jsmith@sitea.example.com"]}
    stored = site_a.directory.list_recipients(MAILBOX, include_deleted=True)
    assert [(s.guid, s.is_deleted) for s in stored] == [(r.guid, True)]


def test_tombstone_is_hidden_from_lists_and_lookups(site_a: AdminService) -> None:
    """A tombstone is not listed, not found by alias, and its addresses do not resolve."""
    r = add_mailbox(site_a, "jsmith")
    site_a.remove_recipient("jsmith")
    assert site_a.list_recipients(None) == []
    assert site_a.directory.lookup("jsmith@sitea.example.com") is None
    for ref in ("jsmith", "jsmith@sitea.example.com", r.guid):
        with pytest.raises(NotFoundError):
            site_a.get_recipient(ref)
    with pytest.raises(NotFoundError):
        site_a.remove_recipient("jsmith")


def test_tombstone_appears_in_changes_since(site_a: AdminService) -> None:
    """The deletion replicates: the tombstone is among the site's changes."""
    add_mailbox(site_a, "jsmith")
    mark = site_a.directory.highest_usn()
    site_a.remove_recipient("jsmith")
    (change,) = site_a.directory.changes_since("SiteA", mark)
    assert change.is_deleted
    assert change.alias == "jsmith"


def test_tombstone_releases_addresses_and_alias(site_a: AdminService) -> None:
    """The deleted recipient's addresses and alias are free for a new recipient at once."""
    old = site_a.add_recipient(MAILBOX, "jsmith", display_name="J", extra_addresses=["j@x.example"])
    site_a.remove_recipient("jsmith")
    new = site_a.add_recipient(MAILBOX, "jsmith", display_name="J", extra_addresses=["j@x.example"])
    assert new.guid != old.guid
    assert new.primary_smtp == "jsmith@sitea.example.com"  # no counter: the old one was released
    owner = site_a.directory.lookup("j@x.example")
    assert owner is not None
    assert owner.guid == new.guid


def test_tombstone_is_dropped_from_groups(site_a: AdminService) -> None:
    """Deleting a member removes it from every group of the site; each group gets a new USN."""
    alice = add_mailbox(site_a, "alice")
    bob = add_mailbox(site_a, "bob")
    staff = site_a.add_recipient(GROUP, "staff", display_name="S", members=["alice", "bob"])
    sales = site_a.add_recipient(GROUP, "sales", display_name="S", members=["alice"])
    mark = site_a.directory.highest_usn()
    site_a.remove_recipient("alice")
    assert site_a.get_recipient("staff").members == [bob.guid]
    assert site_a.get_recipient("sales").members == []
    changed = {c.alias for c in site_a.directory.changes_since("SiteA", mark)}
    assert changed == {"alice", "staff", "sales"}
    assert alice.guid not in site_a.get_recipient("staff").members
    assert staff.usn_changed < site_a.get_recipient("staff").usn_changed
    assert sales.usn_changed < site_a.get_recipient("sales").usn_changed


def test_tombstone_removes_the_password_hash(site_a: AdminService) -> None:
    """A deleted mailbox's secret is erased with it."""
    r = site_a.directory.add_recipient(MAILBOX, "jsmith", display_name="J", password_hash="$x$")
    assert site_a.directory.password_hash(r.guid) == "$x$"
    site_a.remove_recipient("jsmith")
    assert site_a.directory.password_hash(r.guid) is None


def test_tombstone_remove_with_wrong_kind_is_not_found(site_a: AdminService) -> None:
    """`contact remove jsmith` does not delete the mailbox jsmith."""
    add_mailbox(site_a, "jsmith")
    with pytest.raises(NotFoundError):
        site_a.remove_recipient("jsmith", CONTACT)
    assert site_a.get_recipient("jsmith").is_deleted is False


# -- proxy addresses --------------------------------------------------------------------------


def test_proxy_lookup_is_case_insensitive(site_a: AdminService) -> None:
    """Any spelling of a held address finds its owner; the stored case is reported."""
    r = add_mailbox(site_a, "JSmith")
    owner = site_a.directory.lookup("  jsmith@SITEA.example.COM ")
    assert owner is not None
    assert (owner.guid, owner.kind, owner.site, owner.alias) == (r.guid, MAILBOX, "SiteA", "JSmith")
    assert owner.address == "JSmith@sitea.example.com"
    assert owner.is_primary


def test_proxy_lookup_reports_secondaries_and_misses(site_a: AdminService) -> None:
    """A secondary resolves with is_primary False; an unknown address is None."""
    site_a.add_recipient(MAILBOX, "jsmith", display_name="J", extra_addresses=["js@x.example"])
    owner = site_a.directory.lookup("js@x.example")
    assert owner is not None
    assert owner.is_primary is False
    assert site_a.directory.lookup("nobody@sitea.example.com") is None


def test_proxy_address_unique_across_recipients(site_a: AdminService) -> None:
    """An extra address already held (in any case) is DuplicateAddressError; nothing is made."""
    add_mailbox(site_a, "jsmith")
    with pytest.raises(DuplicateAddressError):
        site_a.add_recipient(
            CONTACT,
            "partner",
            display_name="P",
            target="p@partner.example",
            extra_addresses=["JSMITH@SiteA.Example.com"],
        )
    assert [r.alias for r in site_a.list_recipients(None)] == ["jsmith"]


def test_proxy_address_unique_across_sites(site_a: AdminService) -> None:
    """An address held by another site's recipient is taken here too (organisation-wide)."""
    site_a.import_directory([replica_line("bsmith", "bsmith@example.com")])
    with pytest.raises(DuplicateAddressError):
        site_a.add_recipient(
            MAILBOX, "jsmith", display_name="J", extra_addresses=["BSmith@example.com"]
        )


def test_proxy_same_address_twice_in_one_recipient_is_refused(site_a: AdminService) -> None:
    """One recipient cannot list one address twice (in different case) either."""
    with pytest.raises(DuplicateAddressError):
        site_a.add_recipient(
            MAILBOX, "jsmith", display_name="J", extra_addresses=["a@x.example", "A@X.example"]
        )


def test_proxy_taken_template_address_gets_a_counter(site_a: AdminService) -> None:
    """A new recipient whose template address is held gets the next free counter."""
    site_a.add_recipient(
        MAILBOX,
        "john",
        display_name="J",
        extra_addresses=["jsmith@sitea.example.com", "jsmith2@sitea.example.com"],
    )
    assert add_mailbox(site_a, "jsmith").primary_smtp == "jsmith3@sitea.example.com"


def test_proxy_add_address_clash_is_duplicate(site_a: AdminService) -> None:
    """Adding an address another recipient holds is DuplicateAddressError; nothing changes."""
    add_mailbox(site_a, "alice")
    before = add_mailbox(site_a, "bob")
    with pytest.raises(DuplicateAddressError):
        site_a.update_recipient(
            "bob", RecipientChanges(add_addresses=["b@x.example", "ALICE@sitea.example.com"])
        )
    assert site_a.get_recipient("bob") == before
    assert site_a.directory.lookup("b@x.example") is None


def test_proxy_add_address_adds_a_secondary(site_a: AdminService) -> None:
    """add_addresses appends secondaries; an address already held by itself is not repeated."""
    add_mailbox(site_a, "bob")
    r = site_a.update_recipient(
        "bob", RecipientChanges(add_addresses=["Bob@X.example", "BOB@sitea.example.com"])
    )
    assert r.attrs["proxies"] == ["SMTP:bob@sitea.example.com", "smtp:Bob@x.example"]
    assert site_a.directory.lookup("bob@x.example") is not None


def test_proxy_add_invalid_address_is_refused(site_a: AdminService) -> None:
    """An invalid address is InvalidAddressError (exit 65)."""
    add_mailbox(site_a, "bob")
    with pytest.raises(InvalidAddressError):
        site_a.update_recipient("bob", RecipientChanges(add_addresses=["bob at example"]))


def test_proxy_remove_secondary_releases_it(site_a: AdminService) -> None:
    """Removing a secondary (any case) drops it from the recipient and the index."""
    site_a.add_recipient(MAILBOX, "bob", display_name="B", extra_addresses=["b@x.example"])
    r = site_a.update_recipient("bob", RecipientChanges(remove_addresses=["B@X.EXAMPLE"]))
    assert r.attrs["proxies"] == ["SMTP:bob@sitea.example.com"]
    assert site_a.directory.lookup("b@x.example") is None


def test_proxy_primary_cannot_be_removed(site_a: AdminService) -> None:
    """The primary address cannot be removed (set another primary first): exit 65."""
    add_mailbox(site_a, "bob")
    with pytest.raises(InvalidValueError, match="primary"):
        site_a.update_recipient("bob", RecipientChanges(remove_addresses=["bob@sitea.example.com"]))


def test_proxy_remove_unknown_address_is_not_found(site_a: AdminService) -> None:
    """Removing an address the recipient does not hold is NotFoundError."""
    add_mailbox(site_a, "bob")
    with pytest.raises(NotFoundError):
        site_a.update_recipient("bob", RecipientChanges(remove_addresses=["x@sitea.example.com"]))


def test_proxy_set_primary_demotes_the_old_one(site_a: AdminService) -> None:
    """A new primary (new or already held) takes `SMTP:`; the old primary stays as secondary."""
    site_a.add_recipient(MAILBOX, "bob", display_name="B", extra_addresses=["b@x.example"])
    r = site_a.update_recipient("bob", RecipientChanges(primary_address="B@X.example"))
    assert r.primary_smtp == "B@x.example"
    assert sorted(r.attrs["proxies"]) == ["SMTP:B@x.example", "smtp:bob@sitea.example.com"]
    r = site_a.update_recipient("bob", RecipientChanges(primary_address="robert@x.example"))
    assert r.primary_smtp == "robert@x.example"
    assert sum(p.primary for p in r.proxies) == 1


def test_proxy_set_primary_held_by_another_is_duplicate(site_a: AdminService) -> None:
    """A primary another recipient holds is DuplicateAddressError."""
    add_mailbox(site_a, "alice")
    add_mailbox(site_a, "bob")
    with pytest.raises(DuplicateAddressError):
        site_a.update_recipient("bob", RecipientChanges(primary_address="alice@sitea.example.com"))


def test_proxy_accepted_domains_cover_templates_and_addresses(site_a: AdminService) -> None:
    """The organisation accepts mail for its template domains and every proxy domain."""
    site_a.add_recipient(MAILBOX, "bob", display_name="B", extra_addresses=["b@Other.example"])
    site_a.set_addressing("smtp", "@example.com", update_recipients=False)
    assert site_a.directory.accepted_domains() == {
        "sitea.example.com",
        "other.example",
        "example.com",
    }
