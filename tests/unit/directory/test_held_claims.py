"""An address two sites gave out before replicating (seed F6): the local claim holds it; when
the local recipient lets go of it, the claim replication held back takes it over."""

from __future__ import annotations

import uuid

from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind, RecipientChanges
from sitemail.replication.apply import WireObject, apply_objects


def _replica_claiming(service: AdminService, address: str) -> str:
    guid = str(uuid.uuid4())
    obj = WireObject(
        guid,
        "SiteB",
        "mailbox",
        "pat",
        "Pat",
        {"proxies": [f"SMTP:{address}"]},
        1,
        1,
        1,
        False,
        1.0,
    )
    with service.store.write() as conn:
        apply_objects(conn, [obj], local_site="SiteA", allowed=["SiteB"])
    return guid


def _holder(service: AdminService, address: str) -> tuple[str, str] | None:
    owner = service.directory.lookup(address)
    return None if owner is None else (owner.site, owner.alias)


def test_deleting_the_local_claimant_hands_the_address_to_the_held_claim(
    site_a: AdminService,
) -> None:
    site_a.add_recipient(
        ObjectKind.MAILBOX, "pat", display_name="Pat", extra_addresses=["pat@example.com"]
    )
    guid = _replica_claiming(site_a, "pat@example.com")
    assert _holder(site_a, "pat@example.com") == ("SiteA", "pat")  # ours never yields
    site_a.remove_recipient("pat")
    owner = site_a.directory.lookup("pat@example.com")
    assert owner is not None
    assert (owner.site, owner.guid) == ("SiteB", guid)


def test_dropping_one_address_hands_over_only_that_one(site_a: AdminService) -> None:
    site_a.add_recipient(
        ObjectKind.MAILBOX,
        "pat",
        display_name="Pat",
        extra_addresses=["pat@example.com", "p@example.com"],
    )
    _replica_claiming(site_a, "pat@example.com")
    site_a.update_recipient("pat", RecipientChanges(display_name="Pat Two"))
    assert _holder(site_a, "pat@example.com") == ("SiteA", "pat")
    site_a.update_recipient("pat", RecipientChanges(remove_addresses=["pat@example.com"]))
    assert _holder(site_a, "pat@example.com") == ("SiteB", "pat")
    assert _holder(site_a, "p@example.com") == ("SiteA", "pat")
