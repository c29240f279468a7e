"""First checks of the directory through AdminService."""

from __future__ import annotations

from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind


def test_mailbox_add_gets_template_address(site_a: AdminService) -> None:
    """A new mailbox gets %m@site-domain as its primary SMTP address."""
    r = site_a.add_recipient(ObjectKind.MAILBOX, "jsmith", display_name="John Smith")
    assert r.primary_smtp == "jsmith@sitea.example.com"
    owner = site_a.directory.lookup("JSMITH@SiteA.Example.com")
    assert owner is not None
    assert owner.alias == "jsmith"
