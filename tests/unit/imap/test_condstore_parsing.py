"""Parsing of the CONDSTORE (RFC 7162), ENABLE (RFC 5161), SPECIAL-USE (RFC 6154) and ESEARCH
(RFC 4731) syntax, and the ESEARCH answer."""

from __future__ import annotations

import pytest

from sitemail.imap.pymap.imap.state import _esearch
from sitemail.imap.pymap.parsing import Params
from sitemail.imap.pymap.parsing.command import Command
from sitemail.imap.pymap.parsing.command.auth import (
    CreateCommand,
    EnableCommand,
    ListCommand,
    SelectCommand,
    StatusCommand,
)
from sitemail.imap.pymap.parsing.command.select import (
    FetchCommand,
    SearchCommand,
    StoreCommand,
)
from sitemail.imap.pymap.parsing.commands import Commands, InvalidCommand
from sitemail.imap.pymap.parsing.response.specials import SearchResponse


def parse(line: bytes) -> Command:
    cmd, _ = Commands().parse(memoryview(line + b"\r\n"), Params())
    return cmd


def test_enable_lists_capabilities_upper_cased() -> None:
    """ENABLE takes one or more capability names."""
    cmd = parse(b"a ENABLE condstore X-Other")
    assert isinstance(cmd, EnableCommand)
    assert cmd.capabilities == [b"CONDSTORE", b"X-OTHER"]
    assert isinstance(parse(b"a ENABLE"), InvalidCommand)


def test_select_condstore_parameter() -> None:
    """SELECT/EXAMINE take (CONDSTORE); other parameters are refused."""
    cmd = parse(b"a SELECT INBOX (CONDSTORE)")
    assert isinstance(cmd, SelectCommand)
    assert cmd.condstore
    plain = parse(b"a EXAMINE INBOX")
    assert isinstance(plain, SelectCommand)
    assert not plain.condstore
    assert isinstance(parse(b"a SELECT INBOX (QRESYNC (1 2))"), InvalidCommand)


def test_status_highestmodseq_attribute() -> None:
    """STATUS accepts HIGHESTMODSEQ."""
    cmd = parse(b"a STATUS INBOX (MESSAGES HIGHESTMODSEQ)")
    assert isinstance(cmd, StatusCommand)
    assert [attr.value for attr in cmd.status_list] == [b"MESSAGES", b"HIGHESTMODSEQ"]


def test_fetch_modseq_and_changedsince() -> None:
    """FETCH takes the MODSEQ attribute and the CHANGEDSINCE modifier, 63 bits at most."""
    cmd = parse(b"a UID FETCH 1:* (FLAGS MODSEQ) (CHANGEDSINCE 9223372036854775807)")
    assert isinstance(cmd, FetchCommand)
    assert [attr.value for attr in cmd.attributes] == [b"FLAGS", b"MODSEQ", b"UID"]
    assert cmd.changedsince == 2**63 - 1
    no_modifier = parse(b"a FETCH 1 FLAGS")
    assert isinstance(no_modifier, FetchCommand)
    assert no_modifier.changedsince is None


@pytest.mark.parametrize(
    "line",
    [
        b"a FETCH 1 FLAGS (CHANGEDSINCE 9223372036854775808)",
        b"a FETCH 1 FLAGS (CHANGEDSINCE)",
        b"a FETCH 1 FLAGS (CHANGEDSINCE x)",
        b"a FETCH 1 FLAGS (VANISHED)",
        b"a STORE 1 (UNCHANGEDSINCE -1) +FLAGS (\\Seen)",
        b"a STORE 1 (NOSUCH 1) +FLAGS (\\Seen)",
        b"a SEARCH MODSEQ",
        b'a SEARCH MODSEQ "/flags/\\\\seen" other 1',
        b"a SEARCH MODSEQ 9223372036854775808",
    ],
)
def test_malformed_condstore_syntax_is_invalid(line: bytes) -> None:
    """Out-of-range mod-sequences and unknown modifiers make the command invalid (BAD)."""
    assert isinstance(parse(line), InvalidCommand)


def test_store_unchangedsince() -> None:
    """STORE takes UNCHANGEDSINCE before the flags operation, 0 included."""
    cmd = parse(b"a STORE 1:3 (UNCHANGEDSINCE 0) +FLAGS.SILENT (\\Seen)")
    assert isinstance(cmd, StoreCommand)
    assert cmd.unchangedsince == 0
    assert cmd.silent


def test_search_modseq_with_and_without_entry() -> None:
    """SEARCH MODSEQ takes an optional entry name and type, then a mod-sequence."""
    for line in (b"a SEARCH MODSEQ 7", b'a SEARCH MODSEQ "/flags/\\\\seen" all 7'):
        cmd = parse(line)
        assert isinstance(cmd, SearchCommand)
        [key] = cmd.keys
        assert (key.value, key.filter) == (b"MODSEQ", 7)


def test_search_response_with_modseq() -> None:
    """A SEARCH with MODSEQ ends its answer with the highest MODSEQ of the matches."""
    assert bytes(SearchResponse([2, 5], 917)) == b"* SEARCH 2 5 (MODSEQ 917)\r\n"
    assert bytes(SearchResponse([])) == b"* SEARCH\r\n"


def test_create_with_special_use() -> None:
    """CREATE takes (USE (attributes)), upper or lower case."""
    cmd = parse(b'a CREATE "My Archive" (use (\\Archive))')
    assert isinstance(cmd, CreateCommand)
    assert (cmd.mailbox, cmd.special_use) == ("My Archive", [b"\\Archive"])
    plain = parse(b"a CREATE Plain")
    assert isinstance(plain, CreateCommand)
    assert plain.special_use == []
    assert isinstance(parse(b"a CREATE x (USE (Archive))"), InvalidCommand)


@pytest.mark.parametrize(
    ("line", "special_only"),
    [
        (b'a LIST "" "*"', False),
        (b'a LIST () "" "*"', False),
        (b'a LIST (SPECIAL-USE) "" "*"', True),
        (b'a LIST "" "*" RETURN (SPECIAL-USE)', False),
        (b'a LIST (special-use) "" % RETURN ()', True),
    ],
)
def test_list_special_use_options(line: bytes, special_only: bool) -> None:
    """LIST takes the SPECIAL-USE selection and return options of RFC 6154."""
    cmd = parse(line)
    assert isinstance(cmd, ListCommand)
    assert cmd.special_use_only is special_only
    assert cmd.ref_name == ""


def test_list_other_extended_options_are_invalid() -> None:
    """LIST-EXTENDED options but SPECIAL-USE are not supported: BAD, not silently ignored."""
    assert isinstance(parse(b'a LIST (SUBSCRIBED) "" "*"'), InvalidCommand)
    assert isinstance(parse(b'a LIST "" "*" RETURN (CHILDREN)'), InvalidCommand)


def test_search_return_options_make_an_esearch() -> None:
    """SEARCH RETURN (MIN MAX ALL COUNT) asks for ESEARCH; RETURN () too; SAVE is refused."""
    cmd = parse(b"a UID SEARCH return (min count) ALL")
    assert isinstance(cmd, SearchCommand)
    assert cmd.esearch
    assert set(cmd.options.value) == {b"MIN", b"COUNT"}
    empty = parse(b"a SEARCH RETURN () ALL")
    assert isinstance(empty, SearchCommand)
    assert empty.esearch
    plain = parse(b"a SEARCH ALL")
    assert isinstance(plain, SearchCommand)
    assert not plain.esearch
    assert isinstance(parse(b"a SEARCH RETURN (SAVE) ALL"), InvalidCommand)
    assert isinstance(parse(b"a SEARCH RETURN ALL"), InvalidCommand)


def test_esearch_response_order_and_modseq() -> None:
    """ESEARCH names MIN MAX ALL COUNT in that order, MODSEQ last (of MIN and MAX alone when
    only they are asked for)."""
    cmd = parse(b"t1 SEARCH RETURN (COUNT MAX MIN) MODSEQ 1")
    assert isinstance(cmd, SearchCommand)
    found = {2: 7, 3: 9, 5: 4}
    assert bytes(_esearch(cmd, found, True)) == (
        b'* ESEARCH (TAG "t1") MIN 2 MAX 5 COUNT 3 MODSEQ 9\r\n'
    )
    only = parse(b"t2 UID SEARCH RETURN (MIN MAX) MODSEQ 1")
    assert isinstance(only, SearchCommand)
    assert (
        bytes(_esearch(only, found, True)) == b'* ESEARCH (TAG "t2") UID MIN 2 MAX 5 MODSEQ 7\r\n'
    )
    assert bytes(_esearch(only, {}, True)) == b'* ESEARCH (TAG "t2") UID\r\n'
