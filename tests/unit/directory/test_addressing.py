"""Site Addressing templates: every token, the cleaning rules, and what is refused."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sitemail.core import InvalidValueError, parse_address
from sitemail.directory import AddressFields, Template, parse_template

JOHN = AddressFields(
    alias="jsmith",
    given_name="John",
    surname="Smith",
    initials="JQ",
    display_name="John Q. Smith",
)


def expand(template: str, fields: AddressFields = JOHN) -> str:
    return parse_template(template).address(fields)


@pytest.mark.parametrize(
    ("template", "address"),
    [
        ("%m@example.com", "jsmith@example.com"),
        ("%g@example.com", "John@example.com"),
        ("%s@example.com", "Smith@example.com"),
        ("%i@example.com", "JQ@example.com"),
        ("%d@example.com", "JohnQ.Smith@example.com"),
        ("%g.%s@example.com", "John.Smith@example.com"),
    ],
)
def test_template_token_expands_to_its_field(template: str, address: str) -> None:
    """%m alias, %g given name, %s surname, %i initials, %d display name."""
    assert expand(template) == address


@pytest.mark.parametrize(
    ("template", "address"),
    [
        ("%1g%s@example.com", "JSmith@example.com"),
        ("%2g%3s@example.com", "JoSmi@example.com"),
        ("%g%1s@example.com", "JohnS@example.com"),
        ("%10g@example.com", "John@example.com"),  # a count beyond the value takes it all
        ("%0g%s@example.com", "Smith@example.com"),
        ("%12m@example.com", "jsmith@example.com"),
    ],
)
def test_template_count_takes_first_characters(template: str, address: str) -> None:
    """A count before a token keeps that many leading characters of the value."""
    assert expand(template) == address


def test_template_replace_token_rewrites_what_follows() -> None:
    """`%r xy` replaces x by y in every expansion after it (here: spaces become dots)."""
    assert expand("%r .%d@example.com") == "John.Q.Smith@example.com"


def test_template_replace_token_does_not_touch_what_precedes() -> None:
    """A replacement applies only after the `%r` that declares it."""
    fields = AddressFields("a", given_name="Anne Marie", surname="Van Dyke")
    assert expand("%g.%r _%s@example.com", fields) == "AnneMarie.Van_Dyke@example.com"


def test_template_replace_token_applies_to_literal_text() -> None:
    """Literal text after a `%r` is rewritten too."""
    assert expand("%rab ab%m@example.com") == "bbjsmith@example.com"


def test_template_replace_tokens_accumulate() -> None:
    """Several `%r` compose, in the order given."""
    fields = AddressFields("x", display_name="o'Neil-Smith")
    assert expand("%r'_%r-.%d@example.com", fields) == "o_Neil.Smith@example.com"


def test_template_double_percent_is_a_literal_percent() -> None:
    """`%%` yields one `%` (a valid atext character)."""
    assert expand("%m%%x@example.com") == "jsmith%x@example.com"


def test_template_literal_text_is_kept() -> None:
    """Text outside tokens is copied."""
    assert expand("staff.%m@example.com") == "staff.jsmith@example.com"


@pytest.mark.parametrize(
    ("display_name", "local"),
    [
        ("John Smith", "JohnSmith"),
        ("Smith, John (Sales)", "SmithJohnSales"),
        ('John "Jack" Smith', "JohnJackSmith"),
        ("Dr. J. Smith", "Dr.J.Smith"),
        ("...John..Smith...", "John.Smith"),
        ("José Müller", "JoséMüller"),
        ("\u00a0John\u00a0Smith", "JohnSmith"),  # no-break spaces are dropped like spaces
        ("John\x00\tSmith\u200b", "JohnSmith"),  # controls and zero-width space
    ],
)
def test_template_drops_characters_a_local_part_cannot_hold(display_name: str, local: str) -> None:
    """Spaces, specials and stray dots are dropped; letters (any script) are kept."""
    fields = AddressFields("x", display_name=display_name)
    assert parse_template("%d@example.com").local_part(fields) == local


@pytest.mark.parametrize(
    "fields",
    [
        AddressFields("jsmith"),  # no given name at all
        AddressFields("jsmith", given_name="()"),  # nothing survives the cleaning
        AddressFields("jsmith", given_name="..."),
    ],
)
def test_template_empty_expansion_falls_back_to_alias(fields: AddressFields) -> None:
    """A template that expands to nothing uses the alias, so every recipient is addressed."""
    assert expand("%g@example.com", fields) == "jsmith@example.com"


def test_template_fallback_when_alias_is_unusable_too() -> None:
    """Even an alias that cleans to nothing yields a valid local part."""
    address = expand("%g@example.com", AddressFields("..."))
    assert parse_address(address).local


def test_template_caps_local_part_at_64_octets() -> None:
    """Long names are cut so the address stays valid (RFC 5321: 64 octets)."""
    fields = AddressFields("x", given_name="G" * 50, surname="S" * 50)
    local = parse_template("%g.%s@example.com").local_part(fields)
    assert local == "G" * 50 + "." + "S" * 13
    parse_address(f"{local}@example.com")


def test_template_cap_counts_utf8_octets_and_never_ends_in_a_dot() -> None:
    """The cap is in octets of UTF-8, cut on a character, with no dangling dot."""
    template = parse_template("%g.%s@example.com")
    split_char = AddressFields("x", given_name="x" + "é" * 40, surname="Smith")
    assert template.local_part(split_char) == "x" + "é" * 31  # 63 octets: no half character
    dangling_dot = AddressFields("x", given_name="g" * 63, surname="Smith")
    assert template.local_part(dangling_dot) == "g" * 63


def test_template_numbered_appends_counter() -> None:
    """A collision counter goes at the end of the local part: jsmith2."""
    assert parse_template("@example.com").numbered("jsmith", 2) == "jsmith2@example.com"


def test_template_numbered_stays_within_64_octets() -> None:
    """A counter on a 64-octet local part replaces its tail instead of overflowing it."""
    address = parse_template("@example.com").numbered("x" * 64, 12)
    assert address == "x" * 62 + "12@example.com"
    parse_address(address)


@pytest.mark.parametrize("text", ["@example.com", "  @Example.COM  "])
def test_template_at_domain_means_alias_at_domain(text: str) -> None:
    """`@domain` alone is shorthand for `%m@domain`."""
    template = parse_template(text)
    assert template == Template("%m", "example.com")
    assert str(template) == "%m@example.com"


def test_template_domain_is_normalised() -> None:
    """The domain is lower-cased and IDN-encoded once, at parse time."""
    assert parse_template("%m@Bücher.Example.").domain == "xn--bcher-kva.example"


def test_template_str_round_trips() -> None:
    """`str(template)` parses back to the same template."""
    template = parse_template("%1g%s@example.com")
    assert parse_template(str(template)) == template


@pytest.mark.parametrize(
    "text",
    [
        "",
        "example.com",  # no '@'
        "%m@a@example.com",  # two '@'
        "%q@example.com",  # unknown token
        "%m%@example.com",  # lone percent
        "%5@example.com",  # a count without a token
        "%r@example.com",  # %r without its two characters
        "%rx@example.com",
        "%m@",  # no domain
        "%m@exa mple.com",
        "%m@-example.com",
        "%m@example..com",
    ],
)
def test_template_bad_templates_are_refused(text: str) -> None:
    """Malformed templates raise InvalidValueError (exit 65), never anything else."""
    with pytest.raises(InvalidValueError):
        parse_template(text)


# -- properties ------------------------------------------------------------------------------

_FIELD_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=80)
_ALIAS = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
_PIECE = st.one_of(
    st.sampled_from(["%m", "%g", "%s", "%i", "%d", "%%", "%1g", "%3s", "%40d", "."]),
    st.builds(
        lambda a, b: f"%r{a}{b}",
        st.characters(exclude_characters="@\n"),
        st.characters(exclude_characters="@\n"),
    ),
    st.text(st.characters(exclude_characters="%@\n"), max_size=5),
)
_LOCAL_FORMAT = st.lists(_PIECE, max_size=8).map("".join)
_FIELDS = st.builds(AddressFields, _ALIAS, _FIELD_TEXT, _FIELD_TEXT, _FIELD_TEXT, _FIELD_TEXT)


@given(_LOCAL_FORMAT, _FIELDS, st.integers(min_value=1, max_value=10**6))
@example("%d", AddressFields("a", display_name="\u00a0x"), 2)
@example("%g.%s", AddressFields("a", given_name="g" * 64, surname="s" * 64), 99)
def test_template_expansion_always_yields_a_valid_address(
    local_format: str, fields: AddressFields, counter: int
) -> None:
    """Every template that parses gives every recipient a valid address, counter or not."""
    template = parse_template(f"{local_format}@example.com")
    local = template.local_part(fields)
    assert local
    parsed = parse_address(template.address(fields))
    assert parsed.local == local  # nothing is lost or altered by parsing it back
    assert parse_address(template.numbered(local, counter)).domain == "example.com"


@given(st.text(max_size=40))
def test_template_parse_raises_only_invalid_value_error(text: str) -> None:
    """On arbitrary text parse_template returns a Template or raises InvalidValueError."""
    try:
        template = parse_template(text)
    except InvalidValueError:
        return
    assert parse_template(str(template)) == template


# -- the expander: the same answers, fast for the usual templates -------------------------------

_TEXT = st.text(
    st.sampled_from("abcXYZ09._-+'%é ()\"\\\u00a0\u200b") | st.characters(), max_size=70
)


@given(
    template=st.sampled_from(
        ["%m", "%g", "%1g%s", "%g.%s", "%r .%d", "%2s%i.x", "staff.%m", "%m%%", "%12m", "%d"]
    ),
    fields=st.builds(AddressFields, _TEXT, _TEXT, _TEXT, _TEXT, _TEXT),
)
@example(template="%m", fields=AddressFields("x" * 64))
@example(template="%m", fields=AddressFields("x" * 65))
@example(template="%m", fields=AddressFields(".jsmith"))
@example(template="%m", fields=AddressFields("j..smith"))
@example(template="%g.%s", fields=AddressFields("a", given_name="John", surname=""))
def test_template_expander_equals_local_part(template: str, fields: AddressFields) -> None:
    """`expander()` answers exactly what `local_part` does, for any fields."""
    parsed = parse_template(f"{template}@example.com")
    expand = parsed.expander()
    values = (fields.alias, fields.given_name, fields.surname, fields.initials)
    assert expand(*values, fields.display_name) == parsed.local_part(fields)


def test_template_uses_names_only_with_name_tokens() -> None:
    """`uses_names` is false for templates that read the alias alone."""
    assert not parse_template("@example.com").uses_names
    assert not parse_template("staff.%m%%@example.com").uses_names
    assert parse_template("%1g%s@example.com").uses_names
    assert parse_template("%d@example.com").uses_names
