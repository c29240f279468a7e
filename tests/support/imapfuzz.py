"""Properties of the IMAP engine's parsers, for the bounded fuzz test and the long run.

`check_command` feeds one command line to the command parser as the connection does (state
check first, no continuation allowed); only a parsed command or an InvalidCommand may come
out. `check_message` loads a stored message and asks for everything FETCH and SEARCH can
ask; nothing may raise. The strategies build both random bytes and near-valid IMAP/MIME, so
the parsers' deeper paths are reached.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from hypothesis import strategies as st

from sitemail.imap.backend import Message, _Loaded
from sitemail.imap.pymap.mime.address import parse_addresses
from sitemail.imap.pymap.parsing import Params
from sitemail.imap.pymap.parsing.command import Command
from sitemail.imap.pymap.parsing.commands import Commands
from sitemail.imap.pymap.parsing.modutf7 import ModUtf7Error, modutf7_decode
from sitemail.imap.pymap.parsing.specials import FetchRequirement, ObjectId

_COMMANDS = Commands()
_WORDS = [
    b"a1", b"UID", b"FETCH", b"SEARCH", b"STORE", b"SELECT", b"LIST", b"APPEND", b"LOGIN",
    b"COPY", b"MOVE", b"STATUS", b"CREATE", b"RENAME", b"EXPUNGE", b"IDLE", b"ENABLE",
    b"1:*", b"*", b"1,3:5", b"(", b")", b"[", b"]", b"<0.10>", b"BODY", b"BODY.PEEK[1.2]",
    b"BINARY[1]", b"HEADER.FIELDS", b"(FROM TO)", b"ENVELOPE", b"BODYSTRUCTURE", b"FLAGS",
    b"+FLAGS.SILENT", b"(\\Seen $Label1)", b"INBOX", b'"a&AOk-"', b"foo&bar", b"{5+}\r\nhello",
    b"{3}", b"~{2+}\r\n\x00\x01", b'"quo\\"ted"', b"NOT", b"OR", b"ALL", b"TEXT", b"BODY x",
    b"SINCE 1-Jan-2020", b"HEADER X-A b", b"MODSEQ 5", b"CHARSET UTF-8", b"RETURN (MIN)",
    b"NIL", b"%", b"&", b"\xff", b"\x00",
]  # fmt: skip


def commands() -> st.SearchStrategy[bytes]:
    """Command lines: IMAP words in random order and nesting, or random bytes."""
    words = st.lists(st.sampled_from(_WORDS) | st.binary(max_size=12), max_size=24)
    built = st.builds(
        lambda tag, ws: tag + b" " + b" ".join(ws), st.sampled_from([b"a1", b"*", b""]), words
    )
    return (built | st.binary(max_size=200)).map(lambda line: line + b"\r\n")


def check_command(line: bytes) -> None:
    """The parser turns any line into a Command (an InvalidCommand for BAD/NO), never an error."""
    params = Params(allow_continuations=False)
    cmd, _ = _COMMANDS.parse(memoryview(line), params, refuse=lambda _kind: None)
    assert isinstance(cmd, Command)
    for name in line.split():
        with contextlib.suppress(ModUtf7Error):
            modutf7_decode(name)
        parse_addresses(name)


_HEADERS = [
    b"From: a@b.example", b"From : x@y", b"Sender:", b"Sender: a@b, c@d", b"To: g: a@b, c@d;",
    b"Reply-To: (((c)))", b"Date: Mon, 7 Dec 2026 10:00:00 +0100", b"Date: garbage",
    b"Subject: =?utf-8?q?caf=C3=A9?=", b"Subject: \xc3\xa9t\xc3\xa9", b"MIME-Version: 1.0",
    b"Content-Type: multipart/mixed; boundary=b", b"Content-Type: multipart/digest; boundary=b",
    b"Content-Type: message/rfc822", b"Content-Type: text/plain; charset=\"utf-8\"",
    b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Transfer-Encoding: binary", b"Content-Transfer-Encoding: x-unknown",
    b"Content-Disposition: attachment; filename=\"a.bin\"", b"Content-Disposition: ;;;",
    b"Content-Language: en", b"X-Folded: a\r\n b\r\n\tc",
]  # fmt: skip
_BODIES = [b"--b", b"--b--", b"--b \t", b"", b"hello", b"aGVsbG8=", b"=41=\r\n", b"\x00\xff"]


def messages() -> st.SearchStrategy[bytes]:
    """Stored messages: headers and MIME lines shuffled and nested, or random bytes."""
    line = st.sampled_from(_HEADERS + _BODIES) | st.binary(max_size=20)
    lines = st.lists(line, max_size=40)
    built = lines.map(lambda ls: b"\r\n".join(ls) + b"\r\n")
    nested = st.integers(min_value=0, max_value=150).map(
        lambda depth: (
            b"".join(
                b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                for i in range(depth)
            )
            + b"\r\nx\r\n"
        )
    )
    return built | nested | st.binary(max_size=400)


def check_message(raw: bytes) -> None:
    """Everything FETCH and SEARCH ask of a message answers, whatever the message holds."""
    message = Message(1, datetime.now(UTC), [], size=len(raw), email_id=ObjectId(b"M1"))
    loaded = _Loaded(message, FetchRequirement.CONTENT, raw)
    bytes(loaded.get_envelope_structure())
    structure = loaded.get_body_structure()
    bytes(structure)
    bytes(structure.extended)
    for section in ([], [1], [1, 1], [2, 1, 3]):
        bytes(loaded.get_body(section))
        bytes(loaded.get_body(section, binary=True))
        bytes(loaded.get_headers(section)) if section else None
        bytes(loaded.get_message_headers(section, frozenset({b"FROM"})))
        bytes(loaded.get_message_text(section))
        loaded.get_size(section)
    loaded.contains(b"hello")
    loaded.contains(b"a", with_headers=True)
    loaded.get_header(b"from")
