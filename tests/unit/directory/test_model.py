"""Directory values: proxy address notation and what a Recipient exposes."""

from __future__ import annotations

import pytest

from sitemail.directory import (
    RECIPIENT_KINDS,
    Guid,
    ObjectKind,
    Proxy,
    Recipient,
    format_proxy,
    parse_proxy,
)


def test_proxy_upper_case_prefix_is_primary() -> None:
    """`SMTP:` marks the primary address, as in Exchange."""
    assert parse_proxy("SMTP:jsmith@example.com") == Proxy("SMTP", "jsmith@example.com", True)


def test_proxy_lower_case_prefix_is_secondary() -> None:
    """`smtp:` marks a secondary address; the type is always reported upper-case."""
    assert parse_proxy("smtp:jsmith@example.com") == Proxy("SMTP", "jsmith@example.com", False)


@pytest.mark.parametrize("text", ["SMTP:JSmith@Example.com", "smtp:a@b.example", "X400:c=US;a=;"])
def test_proxy_format_round_trips(text: str) -> None:
    """format_proxy(parse_proxy(x)) == x for both primaries and secondaries."""
    assert format_proxy(parse_proxy(text)) == text


def test_proxy_key_is_lower_case_address() -> None:
    """The index key of a proxy ignores case."""
    assert Proxy("SMTP", "JSmith@Example.com", True).key == "jsmith@example.com"


def test_recipient_kinds_are_mailbox_contact_group() -> None:
    """Only mailboxes, contacts and groups are recipients; sites and servers are not."""
    assert {ObjectKind.MAILBOX, ObjectKind.CONTACT, ObjectKind.GROUP} == RECIPIENT_KINDS
    assert ObjectKind.SITE not in RECIPIENT_KINDS


def test_recipient_exposes_attributes_and_primary() -> None:
    """Names, target, members and the primary SMTP address are read from attrs."""
    r = Recipient(
        guid=Guid("g1"),
        site="SiteA",
        kind=ObjectKind.MAILBOX,
        alias="jsmith",
        display_name="John Smith",
        attrs={
            "proxies": ["smtp:old@sitea.example.com", "SMTP:jsmith@example.com"],
            "given_name": "John",
            "surname": "Smith",
            "initials": "J",
            "target": "x@example.net",
            "members": ["g2"],
        },
    )
    assert r.primary_smtp == "jsmith@example.com"
    assert (r.given_name, r.surname, r.initials, r.target) == (
        "John",
        "Smith",
        "J",
        "x@example.net",
    )
    assert r.members == ["g2"]
    assert r.as_dict()["kind"] == "mailbox"


def test_recipient_without_proxies_has_no_primary() -> None:
    """A tombstone (no proxies) has an empty primary address."""
    r = Recipient(Guid("g"), "SiteA", ObjectKind.MAILBOX, "x", "x", {"deleted_kind": "mailbox"})
    assert r.primary_smtp == ""
    assert r.proxies == []
