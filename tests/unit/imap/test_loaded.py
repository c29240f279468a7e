"""Headers, bodies and sizes read straight from the stored octets match pymap's own parse."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sitemail.imap.backend import Message, _Loaded
from sitemail.imap.pymap.message import BaseLoadedMessage
from sitemail.imap.pymap.mime import MessageContent
from sitemail.imap.pymap.parsing.specials import FetchRequirement, ObjectId

MESSAGES = [
    b"From: a@example.test\r\nTo: b@example.test,\r\n\tc@example.test\r\nSubject: folded\r\n"
    b" subject line\r\nX-Empty:\r\n\r\nbody\r\nmore\r\n",
    b"Subject: no body\r\n\r\n",
    b"Content-Type: multipart/mixed; boundary=zz\r\nSubject: parts\r\n\r\n--zz\r\n"
    b"Content-Type: text/plain\r\n\r\none\r\n--zz--\r\n",
    b"Subject: bare LF\nFrom: x@example.test\n\nbody\n",  # falls back to pymap's parse
]
SUBSETS = [None, frozenset({b"SUBJECT"}), frozenset({b"FROM", b"TO", b"X-EMPTY"}), frozenset()]


def pair(raw: bytes) -> tuple[_Loaded, BaseLoadedMessage]:
    message = Message(1, datetime.now(UTC), [], size=len(raw), email_id=ObjectId(b"M1"))
    requirement = FetchRequirement.CONTENT
    return (
        _Loaded(message, requirement, raw),
        BaseLoadedMessage(message, requirement, MessageContent.parse(raw)),
    )


HEADER_FORMS = [(subset, inverse) for subset in SUBSETS for inverse in (False, True)]


@pytest.mark.parametrize("raw", MESSAGES)
@pytest.mark.parametrize(
    ("subset", "inverse"), [form for form in HEADER_FORMS if form[0] is not None or not form[1]]
)
def test_loaded_headers_match_pymap(
    raw: bytes, subset: frozenset[bytes] | None, inverse: bool
) -> None:
    """BODY[HEADER] and BODY[HEADER.FIELDS (...)] / .NOT are byte for byte pymap's."""
    ours, theirs = pair(raw)
    assert bytes(ours.get_message_headers(None, subset, inverse)) == bytes(
        theirs.get_message_headers(None, subset, inverse)
    )


@pytest.mark.parametrize("raw", MESSAGES)
def test_loaded_body_size_and_structure_match_pymap(raw: bytes) -> None:
    """BODY[], RFC822.SIZE, BODY[TEXT], BODYSTRUCTURE and ENVELOPE agree with pymap's."""
    ours, theirs = pair(raw)
    assert bytes(ours.get_body()) == bytes(theirs.get_body())
    assert ours.get_size() == theirs.get_size()
    assert bytes(ours.get_message_text()) == bytes(theirs.get_message_text())
    assert bytes(ours.get_body_structure()) == bytes(theirs.get_body_structure())
    assert bytes(ours.get_envelope_structure()) == bytes(theirs.get_envelope_structure())
