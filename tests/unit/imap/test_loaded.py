"""Headers, bodies and sizes read straight from the stored octets match pymap's own parse."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sitemail.imap.backend import Message, _Loaded
from sitemail.imap.pymap.flags import SessionFlags
from sitemail.imap.pymap.message import BaseLoadedMessage
from sitemail.imap.pymap.mime import MessageContent
from sitemail.imap.pymap.parsing.specials import FetchRequirement, ObjectId
from sitemail.imap.pymap.parsing.specials.flag import Seen

MESSAGES = [
    b"From: a@example.test\r\nTo: b@example.test,\r\n\tc@example.test\r\nSubject: folded\r\n"
    b" subject line\r\nX-Empty:\r\n\r\nbody\r\nmore\r\n",
    b"Subject: no body\r\n\r\n",
    b"Content-Type: multipart/mixed; boundary=zz\r\nSubject: parts\r\n\r\n--zz\r\n"
    b"Content-Type: text/plain\r\n\r\none\r\n--zz--\r\n",
    b"Subject: bare LF\nFrom: x@example.test\n\nbody\n",  # falls back to pymap's parse
    b"Subject: one bare LF\r\nFrom: x@example.test\nTo: y@example.test\r\n\r\nbody\r\n",
    b"Subject: CR CR LF\r\r\nFrom: x@example.test\r\n\r\nbody\r\n",
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


def test_message_bound_copies_every_slot() -> None:
    """A message bound to a command's batch keeps every value of the original but `expunged`."""
    original = Message(7, datetime.now(UTC), [Seen], size=42, email_id=ObjectId(b"M7"), modseq=5)
    bound = original.bound(None, expunged=True)
    slots = {name for klass in Message.__mro__ for name in getattr(klass, "__slots__", ())}
    for name in slots - {"expunged", "_batch"}:
        assert getattr(bound, name) == getattr(original, name), name
    assert bound.expunged
    assert not original.expunged
    assert bound.get_flags(SessionFlags(frozenset())) == frozenset({Seen})


REQUIREMENTS = [FetchRequirement.NONE, *FetchRequirement, FetchRequirement.CONTENT]


@pytest.mark.parametrize("left", REQUIREMENTS)
@pytest.mark.parametrize("right", REQUIREMENTS)
def test_fetch_requirement_tests_match_flag_operators(
    left: FetchRequirement, right: FetchRequirement
) -> None:
    """has_all, has_none and reduce answer as Flag's own operators would."""
    assert left.has_all(right) == ((left & right) == right)
    assert left.has_none(right) == ((left & right) == FetchRequirement.NONE)
    assert FetchRequirement.reduce([left, right]) is (left | right)
