"""The engine's parsers end on every input: modified UTF-7, address lists, nesting, MIME."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sitemail.imap.backend import Message, _Loaded
from sitemail.imap.pymap.mime import MAX_DEPTH
from sitemail.imap.pymap.mime.address import EnvelopeAddress, parse_addresses
from sitemail.imap.pymap.parsing import Params
from sitemail.imap.pymap.parsing.commands import (
    MAX_NESTING,
    Commands,
    InvalidCommand,
    nesting_depth,
)
from sitemail.imap.pymap.parsing.modutf7 import ModUtf7Error, modutf7_decode, modutf7_encode
from sitemail.imap.pymap.parsing.specials import FetchRequirement, ObjectId


@pytest.mark.parametrize(
    ("raw", "name"),
    [(b"INBOX", "INBOX"), (b"&-", "&"), (b"caf&AOk-", "café"), (b"&ZeVnLIqe-", "日本語")],
)
def test_modutf7_decodes_valid_names(raw: bytes, name: str) -> None:
    """Valid modified UTF-7 decodes, and encodes back to the same bytes."""
    assert modutf7_decode(raw) == name
    assert modutf7_encode(name) == raw


@pytest.mark.parametrize("raw", [b"foo&bar", b"&", b"&AGE-", b"&!!-", b"\xc3\xa9", b"a\x00"])
def test_modutf7_refuses_invalid_names(raw: bytes) -> None:
    """An unclosed '&', shifted ASCII, bad base64 or 8-bit bytes raise, never loop."""
    with pytest.raises(ModUtf7Error):
        modutf7_decode(raw)


def test_modutf7_encodes_ampersand_after_a_shifted_run() -> None:
    """'&' right after non-ASCII is written '&-' (upstream wrote a bare '&')."""
    assert modutf7_encode("é&") == b"&AOk-&-"


def addr(
    name: bytes | None, mailbox: bytes, host: bytes, adl: bytes | None = None
) -> EnvelopeAddress:
    return EnvelopeAddress(name, adl, mailbox, host)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"", []),
        (b"Real Name <user@domain>", [addr(b"Real Name", b"user", b"domain")]),
        (b"user@domain (Real Name)", [addr(b"Real Name", b"user", b"domain")]),
        (b'"Q, Uoted" <q@d>, b@e', [addr(b"Q, Uoted", b"q", b"d"), addr(None, b"b", b"e")]),
        (b"<@route:user@domain>", [addr(None, b"user", b"domain", b"@route")]),
        (b"nodomain", [addr(None, b"nodomain", b"")]),
        (
            b"group: g1@d1;",
            [
                EnvelopeAddress(None, None, b"group", None),
                addr(None, b"g1", b"d1"),
                EnvelopeAddress(None, None, None, None),
            ],
        ),
        (b"=?utf-8?q?J=C3=B6rg?= <j@d>", [addr(b"=?utf-8?q?J=C3=B6rg?=", b"j", b"d")]),
    ],
)
def test_parse_addresses_as_envelope_shows_them(
    value: bytes, expected: list[EnvelopeAddress]
) -> None:
    """Names from the phrase or the comment, routes, groups, names left encoded."""
    assert parse_addresses(value) == expected


@pytest.mark.parametrize(
    "value", [b"(" * 5000 + b"a@b", b"<" * 100, b'"unclosed', b",,,;;;:::", b"\\", b"@@@"]
)
def test_parse_addresses_ends_on_hostile_values(value: bytes) -> None:
    """Deep comments, stray specials and unclosed quotes end without an exception."""
    parse_addresses(value)


def test_nesting_depth_skips_literals() -> None:
    """Parentheses inside a literal do not count; outside they do."""
    assert nesting_depth(b"((a) (b (c)))") == 3
    assert nesting_depth(b"{10+}\r\n((((((((((x") == 0


def test_commands_refuse_deep_lists_before_parsing() -> None:
    """A SEARCH nested deeper than MAX_NESTING is an InvalidCommand (BAD), not a crash."""
    line = b"a SEARCH " + b"(" * (MAX_NESTING + 1) + b"ALL" + b")" * (MAX_NESTING + 1) + b"\r\n"
    cmd, _ = Commands().parse(memoryview(line), Params())
    assert isinstance(cmd, InvalidCommand)
    assert b"nested too deeply" in cmd.message


def test_commands_refuse_by_state_before_parsing_arguments() -> None:
    """The state's refusal is asked before arguments: no parse of SELECT's name at all."""
    seen: list[bytes] = []

    def refuse(cmd_type: type) -> bytes:
        seen.append(cmd_type.command)  # type: ignore[attr-defined]
        return b"SELECT: Must authenticate first."

    cmd, _ = Commands().parse(memoryview(b"a2 SELECT foo&bar\r\n"), Params(), refuse=refuse)
    assert isinstance(cmd, InvalidCommand)
    assert cmd.message == b"SELECT: Must authenticate first."
    assert seen == [b"SELECT"]


def loaded(raw: bytes) -> _Loaded:
    message = Message(1, datetime.now(UTC), [], size=len(raw), email_id=ObjectId(b"M1"))
    return _Loaded(message, FetchRequirement.CONTENT, raw)


def test_mime_nesting_beyond_the_cap_is_one_opaque_part() -> None:
    """3,000 nested multiparts: BODYSTRUCTURE has MAX_DEPTH levels, then one opaque part."""
    raw = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(3000)
    )
    structure = bytes(loaded(raw + b"\r\nx\r\n").get_body_structure().extended)
    assert structure.count(b'"mixed"') == MAX_DEPTH
    assert b'"application" "octet-stream"' in structure


def test_bodystructure_sizes_exclude_the_part_header_and_boundary_crlf() -> None:
    """RFC 3501 7.4.2 sizes and lines; BODY[1] without the CRLF before the boundary."""
    raw = (
        b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
        b"Content-Type: text/plain\r\n\r\n0123456789\r\nabc\r\n--zz\r\n"
        b'Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="a.bin"\r\n'
        b"\r\nAAAA\r\n--zz--\r\n"
    )
    message = loaded(raw)
    assert bytes(message.get_body([1])) == b"0123456789\r\nabc"
    structure = bytes(message.get_body_structure().extended)
    assert b'"7BIT" 15 1 NIL NIL NIL NIL' in structure
    assert b'("attachment" ("filename" "a.bin"))' in structure
    assert b'"7BIT" 4 NIL' in structure


def test_envelope_of_broken_address_headers() -> None:
    """Empty Sender, two Senders, `From :`: an envelope every time, Sender defaulting to From."""
    raw = (
        b"From : a@b.example\r\nSender:\r\nReply-To: x@y, z@w\r\nDate: Mon, 7 Dec 2026\r\n\r\nx\r\n"
    )
    envelope = bytes(loaded(raw).get_envelope_structure())
    assert envelope == (
        b'("Mon, 7 Dec 2026" NIL ((NIL NIL "a" "b.example")) ((NIL NIL "a" "b.example"))'
        b' ((NIL NIL "x" "y")(NIL NIL "z" "w")) NIL NIL NIL NIL NIL)'
    )
