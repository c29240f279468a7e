"""The bounds of a message read from outside (core.mailshape), each at and past its limit."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sitemail.core.errors import MalformedMessageError
from sitemail.core.mailshape import Bounds, check_structure, check_structure_chunks, read_header

SMALL = Bounds(mime_depth=5, header_fields=10, field_bytes=200, header_bytes=1000, parts=20)


def multipart(depth: int, *, kind: bytes = b"multipart/mixed") -> bytes:
    opening = b"".join(
        b'Content-Type: %s; boundary="b%d"\r\n\r\n--b%d\r\n' % (kind, i, i) for i in range(depth)
    )
    closing = b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    return b"Subject: x\r\n" + opening + b"Content-Type: text/plain\r\n\r\nhi\r\n" + closing


def rfc822(depth: int) -> bytes:
    return b"Subject: x\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * depth + b"\r\nhi\r\n"


def refusal(raw: bytes, bounds: Bounds = SMALL) -> str:
    with pytest.raises(MalformedMessageError) as refused:
        check_structure(raw, bounds)
    return refused.value.message


def test_mime_depth_is_bounded_for_multiparts() -> None:
    """Nesting up to the bound passes; one level more is refused, whatever the depth."""
    check_structure(multipart(5), SMALL)
    assert "nested deeper than 5" in refusal(multipart(6))
    assert "nested deeper than 100" in refusal(multipart(3000), Bounds())


def test_mime_depth_counts_message_parts() -> None:
    """message/rfc822 parts hold a whole message: each one is a level."""
    check_structure(rfc822(5), SMALL)
    assert "nested deeper" in refusal(rfc822(6))


def test_mime_depth_counts_digest_parts_without_content_type() -> None:
    """Inside multipart/digest a part without Content-Type is message/rfc822 (RFC 2046)."""
    digest = b"Subject: x\r\n" + b"".join(
        b'Content-Type: multipart/digest; boundary="d%d"\r\n\r\n--d%d\r\n\r\n' % (i, i)
        for i in range(3)
    )
    assert "nested deeper" in refusal(digest)  # 3 digests + 3 implied messages = 6


def test_siblings_do_not_add_to_depth() -> None:
    """Closing delimiters end their multiparts: many parts side by side stay shallow."""
    parts = b"".join(b"--s\r\nContent-Type: text/plain\r\n\r\npart\r\n" for _ in range(15))
    raw = b'Content-Type: multipart/mixed; boundary="s"\r\n\r\n' + parts + b"--s--\r\n"
    check_structure(raw, SMALL)
    assert "more than 20 MIME parts" in refusal(raw.replace(b"--s--", b"--s\r\n" * 10 + b"--s--"))


def test_an_enclosing_delimiter_ends_the_parts_inside_it() -> None:
    """An outer boundary line closes every unclosed inner multipart, as the email parser does."""
    inner = b'--o\r\nContent-Type: multipart/mixed; boundary="i"\r\n\r\n--i\r\n\r\nx\r\n'
    raw = b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n' + inner * 12 + b"--o--\r\n"
    check_structure(raw, Bounds(mime_depth=2, parts=100))


def test_header_bounds() -> None:
    """Fields per section, bytes per field (folded lines included) and per section."""
    check_structure(b"X-A: 1\r\n" * 10 + b"\r\nbody", SMALL)
    assert "more than 10 header fields" in refusal(b"X-A: 1\r\n" * 11 + b"\r\nbody")
    folded = b"X-A: 1\r\n" + b" " + b"a" * 100 + b"\r\n" + b" " + b"a" * 100 + b"\r\n\r\n"
    assert "header field over 200 bytes" in refusal(folded)
    assert "header section over 1000 bytes" in refusal(
        b"X-A: " + b"a" * 150 + b"\r\n" * 0 + (b"\r\nX-B: " + b"b" * 150) * 8 + b"\r\n\r\n"
    )


def test_part_headers_are_bounded_too() -> None:
    """A part's header section has the same bounds as the message's."""
    raw = b'Content-Type: multipart/mixed; boundary="s"\r\n\r\n--s\r\n' + b"X-A: 1\r\n" * 11
    assert "more than 10 header fields" in refusal(raw + b"\r\nx\r\n--s--\r\n")


def test_lines_looked_at_one_by_one_are_bounded() -> None:
    """Header lines and lines starting like a delimiter (the lines a pass reads in Python)
    are capped for the whole message, so no shape of message makes the check slow."""
    bounds = Bounds(lines=100)
    opening = b'Content-Type: multipart/mixed; boundary="z"\r\n\r\n'
    check_structure(opening + b"--x\r\n" * 90 + b"--z--\r\n", bounds)
    assert "more than 100 header lines" in refusal(opening + b"--x\r\n" * 101, bounds)
    check_structure(b"Subject: x\r\n\r\n" + b"--x\r\n" * 1000, bounds)  # no multipart open
    part = b"--z\r\nX-A: 1\r\n\r\nbody\r\n"
    assert "more than 100 header lines" in refusal(opening + part * 60 + b"--z--\r\n", bounds)


def test_a_long_multipart_content_type_is_refused() -> None:
    """Its boundary would go through the email package's quadratic parameter parser."""
    field = b'Content-Type: multipart/mixed; boundary="b"; x="' + b";" * 9000 + b'"\r\n\r\n'
    assert "Content-Type field over" in refusal(field, Bounds())


def test_rfc2231_boundaries_are_read_as_the_email_parser_reads_them() -> None:
    """A boundary in RFC 2231 continuations is still a boundary: nesting counts."""
    level = b'Content-Type: multipart/mixed; boundary*0="a%d"; boundary*1="z"\r\n\r\n--a%dz\r\n'
    raw = b"".join(level % (i, i) for i in range(6)) + b"\r\nx\r\n"
    assert "nested deeper" in refusal(raw)


def test_a_content_type_the_email_package_cannot_read_is_refused() -> None:
    """RFC 2231 forms mixed (the email package raises TypeError reading the boundary, in its
    parser too): refused as malformed, never raised."""
    field = b"Content-Type: multipart/mixed; boundary*=utf-8''a; boundary*0*=x'en'%ZZ\r\n"
    with pytest.raises(TypeError):
        email.message_from_bytes(field + b"\r\n--a\r\n\r\nx\r\n")
    assert "cannot be read" in refusal(field + b"\r\n--a\r\n", Bounds())


def python_depth(part: email.message.Message) -> int:
    if not part.is_multipart():
        return 0
    return 1 + max((python_depth(p) for p in part.get_payload()), default=0)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=a\r\n", b"Content-Type: message/rfc822\r\n",
    b"Content-Type: multipart/digest; boundary=b\r\n", b"Content-Type: text/plain\r\n",
    b"\r\n", b"--a\r\n", b"--a--\r\n", b"--b\r\n", b"--b--\r\n", b"X: y\r\n",
    b" folded\r\n", b"text\r\n",
]), max_size=60))  # fmt: skip
def test_what_passes_the_bounds_nests_no_deeper_for_the_email_parser(lines: list[bytes]) -> None:
    """Any mix of headers, delimiters and bodies: either refused as malformed, or the email
    parser (which recurses per level) finds it nested no deeper than the bound."""
    raw = b"".join(lines)
    try:
        check_structure(raw, Bounds(mime_depth=3))
    except MalformedMessageError:
        return
    mail = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert python_depth(mail) <= 3


def outcome(check: Callable[[], None]) -> str:
    try:
        check()
    except MalformedMessageError as exc:
        return exc.message
    return "passes"


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from([
        b"Content-Type: multipart/mixed; boundary=a\r\n", b"Content-Type: message/rfc822\r\n",
        b"Content-Type: multipart/digest; boundary=b\r\n", b"Content-Type: text/plain\r\n",
        b"\r\n", b"--a\r\n", b"--a--\r\n", b"--b\r\n", b"--b--\r\n", b"X: y\r\n",
        b" folded\r\n", b"text\r\n", b"--c\r\n", b"end",
    ]), max_size=60),
    st.integers(min_value=1, max_value=40),
)  # fmt: skip
def test_check_structure_chunks_answers_as_the_whole_message_does(
    lines: list[bytes], size: int
) -> None:
    """A message read in pieces of any size (a big one, from its spool file) gets the same
    answer as the message read whole, bound for bound."""
    raw = b"".join(lines)
    bounds = Bounds(mime_depth=3, header_fields=4, field_bytes=40, parts=6, lines=30)
    pieces = [raw[i : i + size] for i in range(0, len(raw), size)]
    whole = outcome(lambda: check_structure(raw, bounds))
    assert outcome(lambda: check_structure_chunks(iter(pieces), bounds)) == whole


def test_read_header_reads_fields_and_continuations() -> None:
    """Names in lower case, folded values unfolded."""
    fields = read_header(b"From: a@b\r\nSubject: one\r\n two\r\n\r\nFrom: body@x\r\n")
    assert [(f.name, f.value) for f in fields] == [("from", " a@b"), ("subject", " one two")]
    assert read_header(b"\r\nbody") == []
    assert [f.name for f in read_header(b"From: a@b\r\n")] == ["from"]


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@b\r\nX-Hidden\r\nFrom: c@d\r\n\r\n",  # a line with no colon
        b"From : c@d\r\n\r\n",  # white space before the colon
        b"From\t: c@d\r\n\r\n",
        b" continued\r\nFrom: a@b\r\n\r\n",  # a continuation of nothing
        b"From: a@b\r\nX: 1\rFrom: c@d\r\n\r\n",  # a bare CR
        b"From: a@b\x00\r\n\r\n",  # a NUL
        b"From a@b Mon Dec  7\r\nFrom: a@b\r\n\r\n",  # an mbox separator
    ],
)
def test_read_header_refuses_lines_clients_read_differently(raw: bytes) -> None:
    """Lines a mail client may read as a field, or as the end of the header, are refused."""
    with pytest.raises(MalformedMessageError):
        read_header(raw)


def test_read_header_bounds_the_number_of_fields() -> None:
    """At most `header_fields` fields."""
    read_header(b"X: 1\r\n" * 10 + b"\r\n", SMALL)
    with pytest.raises(MalformedMessageError):
        read_header(b"X: 1\r\n" * 11 + b"\r\n", SMALL)
