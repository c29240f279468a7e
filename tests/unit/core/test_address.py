"""Addresses: what `parse_address` accepts, what it refuses, and that it never fails otherwise."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sitemail.core import (
    Address,
    InvalidAddressError,
    normalize_domain,
    parse_address,
    valid_local_part_chars,
)

# Arbitrary text, with lone surrogates mixed in: `sys.argv` and `surrogateescape` decoding put
# them into ordinary `str` values, so "arbitrary text" includes them.
_SURROGATES = st.characters(
    min_codepoint=0xD800, max_codepoint=0xDFFF, codec=None, exclude_categories=()
)
_ANY_CHAR = st.one_of(st.characters(codec=None, exclude_categories=()), _SURROGATES)
_ADDRESSY_CHAR = st.one_of(st.sampled_from('@."<>\\[]-: %!'), st.characters(), _SURROGATES)
_ANY_TEXT = st.one_of(st.text(_ANY_CHAR), st.text(_ADDRESSY_CHAR, max_size=80))

_ATOM = st.text(
    st.sampled_from(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
    ),
    min_size=1,
    max_size=10,
)
_LABEL = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
_VALID_ADDRESS = st.builds(
    lambda atoms, labels: ".".join(atoms) + "@" + ".".join(labels),
    st.lists(_ATOM, min_size=1, max_size=4),
    st.lists(_LABEL, min_size=1, max_size=4),
)


def test_parse_address_splits_local_and_domain() -> None:
    """`local@domain` parses into its two parts, case of the local part kept."""
    assert parse_address("JSmith@example.com") == Address("JSmith", "example.com")


def test_parse_address_lowercases_the_domain() -> None:
    """The domain is stored in lower case; the local part is not touched."""
    assert parse_address("JSmith@SiteA.Example.COM") == Address("JSmith", "sitea.example.com")


def test_parse_address_accepts_angle_brackets_and_spaces() -> None:
    """`<a@b>` with surrounding blanks is the same address as `a@b`."""
    assert parse_address("  <user1@example.com> ") == Address("user1", "example.com")


def test_parse_address_converts_idn_domain_to_a_labels() -> None:
    """An internationalised domain is kept in its A-label (punycode) form."""
    assert parse_address("info@bücher.example").domain == "xn--bcher-kva.example"


def test_parse_address_accepts_utf8_local_part() -> None:
    """SMTPUTF8 local parts (RFC 6531) are accepted."""
    assert parse_address("josé@example.com").local == "josé"


def test_parse_address_accepts_quoted_local_part() -> None:
    """A quoted local part with a space is a valid RFC 5321 local part."""
    assert parse_address('"john smith"@example.com').local == '"john smith"'


def test_parse_address_accepts_address_literal() -> None:
    """`user@[192.0.2.1]` is a domain literal, kept as is."""
    assert parse_address("user@[192.0.2.1]").domain == "[192.0.2.1]"


def test_address_key_is_case_insensitive() -> None:
    """Two spellings of one address share one lookup key, the lower-cased whole address."""
    assert parse_address("JSmith@Example.COM").key == parse_address("jsmith@example.com").key
    assert parse_address("JSmith@Example.COM").key == "jsmith@example.com"


def test_address_str_round_trips() -> None:
    """`str(address)` is `local@domain` and parses back to the same value."""
    address = parse_address("John.Smith@Example.com")
    assert str(address) == "John.Smith@example.com"
    assert parse_address(str(address)) == address


@pytest.mark.parametrize(
    ("address", "flagged"),
    [("a%b@c.example", True), ("b!a@c.example", True), ("a.b@c.example", False)],
)
def test_address_has_routing_characters_flags_percent_and_bang(address: str, flagged: bool) -> None:
    """The percent hack and bang paths are recognised so relay checks can refuse them."""
    assert parse_address(address).has_routing_characters is flagged


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "jsmith",
        "jsmith@",
        "@example.com",
        "<>",
        "@a.example,@b.example:user@c.example",  # source route
        '"a@b"@example.com',  # quoted local part smuggling an '@'
        '"unterminated@example.com',
        ".jsmith@example.com",
        "jsmith.@example.com",
        "j..smith@example.com",
        "j smith@example.com",
        "x" * 65 + "@example.com",  # local part over 64 octets
        "é" * 33 + "@example.com",  # 66 octets in UTF-8 although only 33 characters
        "jsmith@-example.com",
        "jsmith@example-.com",
        "jsmith@exa_mple.com",
        "jsmith@example..com",
        "jsmith@" + "a" * 64 + ".com",  # label over 63 octets
        "jsmith@" + ".".join(["a" * 60] * 5),  # domain over 255 octets
        "jsmith@\ud800.example",
        "\ud800@example.com",
        '"\udcff"@example.com',
    ],
)
def test_parse_address_refuses_malformed_text(text: str) -> None:
    """Malformed addresses raise InvalidAddressError, never anything else."""
    with pytest.raises(InvalidAddressError):
        parse_address(text)


def test_parse_address_local_part_of_64_octets_is_accepted() -> None:
    """Exactly 64 octets is the RFC 5321 limit and still valid."""
    assert len(parse_address("x" * 64 + "@example.com").local) == 64


@given(_ANY_TEXT)
@example("\ud800@example.com")
@example('"\ud800"@example.com')
@example("a@b@c")
@example("<<a@b>>")
def test_parse_address_raises_only_invalid_address_error(text: str) -> None:
    """On arbitrary text parse_address returns an Address or raises InvalidAddressError."""
    try:
        result = parse_address(text)
    except InvalidAddressError:
        return
    assert isinstance(result, Address)
    assert result.domain == result.domain.lower()
    assert len(result.local.encode("utf-8")) <= 64


@given(_VALID_ADDRESS)
def test_parse_address_accepts_every_dot_atom_address(text: str) -> None:
    """Any dot-atom local part at an LDH domain parses and round-trips through str()."""
    address = parse_address(text)
    assert str(address).lower() == text.lower()
    assert parse_address(str(address)) == address


@given(st.text(_ANY_CHAR))
def test_valid_local_part_chars_yields_a_valid_local_part_or_nothing(text: str) -> None:
    """What survives the filter is empty or a valid dot-atom (length aside)."""
    cleaned = valid_local_part_chars(text)
    if cleaned:
        parse_address(f"{cleaned[:16].strip('.')}@example.com")


def test_valid_local_part_chars_drops_spaces_and_specials() -> None:
    """Spaces, parentheses, commas and the like are dropped; dots are tidied."""
    assert valid_local_part_chars(" John (Jr.) Smith, III ") == "JohnJr.SmithIII"
    assert valid_local_part_chars("..a...b..") == "a.b"


def test_normalize_domain_strips_trailing_dot_and_lowercases() -> None:
    """`Example.COM.` is the same domain as `example.com`."""
    assert normalize_domain("Example.COM.") == "example.com"


@pytest.mark.parametrize("text", ["", ".", "a..b", "-a.example", "a b.example", "\ud800"])
def test_normalize_domain_refuses_invalid_domains(text: str) -> None:
    """Empty, dotted-out, hyphen-led or spaced domains are refused."""
    with pytest.raises(InvalidAddressError):
        normalize_domain(text)
