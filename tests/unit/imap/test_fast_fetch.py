"""The fast FETCH path writes exactly what pymap's FetchResponse writes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from sitemail.imap.backend import Message
from sitemail.imap.pymap.fetch import MessageAttributes
from sitemail.imap.pymap.flags import PermanentFlags, SessionFlags
from sitemail.imap.pymap.parsing import Params
from sitemail.imap.pymap.parsing.command.select import FetchCommand
from sitemail.imap.pymap.parsing.commands import Commands
from sitemail.imap.pymap.parsing.response.specials import FetchResponse
from sitemail.imap.pymap.parsing.specials import FetchRequirement, ObjectId
from sitemail.imap.pymap.parsing.specials.flag import Flag, Recent, Seen
from sitemail.imap.pymap.selected import SelectedMailbox, SelectedSet
from sitemail.imap.server import _FastFetch, _Gather, fast_fetchable

RAW = (
    b"From: a@example.test\r\nTo: b@example.test\r\nSubject: fast\r\n folded\r\n"
    b"Content-Type: text/plain\r\n\r\nline one\r\nline two\r\n"
)
COMMANDS = [
    "(UID FLAGS)",
    "(UID FLAGS INTERNALDATE RFC822.SIZE)",
    "(UID FLAGS MODSEQ)",
    "BODY.PEEK[HEADER]",
    "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])",
    "(BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)])",
    "BODY[]",
    "BODY.PEEK[]<3.10>",
    "BODY[TEXT]<2.100>",
    "(RFC822 RFC822.HEADER RFC822.TEXT)",
    "(UID UID FLAGS)",
    "BODY[1]",
    "BODY[1.MIME]",
]


class _Batch:
    async def content(self, uid: int) -> bytes:
        return RAW


def render(command: str, *, expunged: bool = False) -> tuple[bytes, bytes]:
    cmd, _ = Commands().parse(memoryview(f"a FETCH 1 {command}\r\n".encode()), Params())
    assert isinstance(cmd, FetchCommand), cmd
    message = Message(
        7,
        datetime(2026, 12, 3, 10, 0, tzinfo=UTC),
        [Seen, Flag(b"$Label")],
        size=len(RAW),
        email_id=ObjectId(b"M1"),
        expunged=expunged,
        batch=_Batch(),  # type: ignore[arg-type]
        modseq=12,
    )
    selected = SelectedMailbox(
        ObjectId(b"F1"),
        False,
        PermanentFlags([Seen]),
        SessionFlags([Recent]),
        SelectedSet(),
        "INBOX",
    )
    selected.session_flags.add_recent(7)
    attributes = cmd.attributes
    assert fast_fetchable(list(dict.fromkeys(attributes)))

    async def both() -> tuple[bytes, bytes]:
        theirs, ours = _Gather(), _Gather()
        attrs = MessageAttributes(message, selected, attributes)
        await FetchResponse(3, attrs, writing_hook=attrs.load_hook()).async_write(theirs)
        requirement = FetchRequirement.reduce(a.requirement for a in attributes)
        unique = list(dict.fromkeys(attributes))
        await _FastFetch(3, message, unique, selected, requirement).async_write(ours)
        return bytes(theirs.data), bytes(ours.data)

    return asyncio.run(both())


@pytest.mark.parametrize("command", COMMANDS)
def test_fast_fetch_writes_what_pymap_writes(command: str) -> None:
    theirs, ours = render(command)
    assert ours == theirs


@pytest.mark.parametrize("command", ["(UID FLAGS BODY.PEEK[HEADER])", "(RFC822.SIZE BODY[])"])
def test_fast_fetch_of_an_expunged_message_matches(command: str) -> None:
    theirs, ours = render(command, expunged=True)
    assert ours == theirs


def test_fast_fetch_leaves_structure_attributes_to_pymap() -> None:
    for command in ("ENVELOPE", "BODYSTRUCTURE", "BODY", "(UID BINARY[])"):
        cmd, _ = Commands().parse(memoryview(f"a FETCH 1 {command}\r\n".encode()), Params())
        assert isinstance(cmd, FetchCommand), cmd
        assert not fast_fetchable(cmd.attributes)
