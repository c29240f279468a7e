"""IMAP semantics issue 18 found wrong, checked over real sockets against a running site.

FLAGS and keywords, CLOSE after EXAMINE, UIDVALIDITY/MAILBOXID never reused, BODYSTRUCTURE
sizes and dispositions, BODY[n] boundaries, SEARCH BODY/TEXT, BINARY names, ENVELOPE, MOVE to
the selected mailbox, LSUB. A real site on 127.26.0.12; a raw IMAP client.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clientsite import ClientSite, client_site
from tests.support.rawimap import USER, Raw, raw_tls

ADDRESS = "127.26.0.12"

MIXED = (
    b"From: =?utf-8?q?J=C3=B6rg?= <j@outside.test>\r\nTo: Andr\xc3\xa9 <" + USER.encode() + b">\r\n"
    b"Date: Mon, 7 Dec 2026 10:00:00 +0100\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
    b"Content-Type: text/plain\r\n\r\n0123456789\r\nabc\r\n--zz\r\n"
    b'Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="a.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--zz--\r\n"
)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ClientSite]:
    with client_site(tmp_path, ADDRESS) as running:
        running.add_user("jsmith")
        yield running


@pytest.fixture
def client(site: ClientSite) -> Iterator[Raw]:
    connection = raw_tls(site)
    append(connection, MIXED)
    yield connection
    connection.close()


def append(client: Raw, message: bytes, flags: bytes = b"") -> None:
    client.send(b"ap APPEND INBOX %s{%d+}\r\n" % (flags, len(message)) + message + b"\r\n")
    assert client.until_tagged(b"ap")[-1].startswith(b"ap OK")


def ok(client: Raw, tag: bytes, text: bytes) -> list[bytes]:
    reply = client.command(tag, text)
    assert reply[-1].startswith(tag + b" OK"), reply
    return reply


def test_imap_flags_lists_keywords_and_never_the_wildcard(client: Raw) -> None:
    """FLAGS has no \\*, PERMANENTFLAGS has; a new keyword gets a FLAGS before its FETCH."""
    reply = ok(client, b"s1", b"SELECT INBOX")
    flags = next(line for line in reply if line.startswith(b"* FLAGS"))
    permanent = next(line for line in reply if b"PERMANENTFLAGS" in line)
    assert b"\\*" not in flags
    assert b"\\*" in permanent
    assert reply.index(flags) < reply.index(permanent)
    stored = ok(client, b"s2", b"STORE 1 +FLAGS ($Label1)")
    assert stored[0].startswith(b"* FLAGS"), stored
    assert b"$Label1" in stored[0]
    assert b"$Label1" in stored[1]
    again = ok(client, b"s3", b"EXAMINE INBOX")
    assert any(line.startswith(b"* FLAGS") and b"$Label1" in line for line in again)


def test_imap_close_after_examine_closes_without_expunging(client: Raw) -> None:
    """CLOSE after EXAMINE is OK, leaves the \\Deleted message, and unselects."""
    ok(client, b"c1", b"SELECT INBOX")
    ok(client, b"c2", b"STORE 1 +FLAGS (\\Deleted)")
    ok(client, b"c3", b"EXAMINE INBOX")
    ok(client, b"c4", b"CLOSE")
    assert client.command(b"c5", b"FETCH 1 FLAGS")[-1].startswith(b"c5 BAD")
    reply = ok(client, b"c6", b"EXAMINE INBOX")
    assert b"* 1 EXISTS" in reply


def test_imap_uidvalidity_and_mailboxid_are_never_reused(client: Raw) -> None:
    """DELETE then CREATE of the same name, at once: new UIDVALIDITY and new MAILBOXID."""
    seen: set[tuple[bytes, bytes]] = set()
    for round_ in range(3):
        created = ok(client, b"n%d" % round_, b"CREATE Again")
        mailbox_id = re.search(rb"MAILBOXID \(([^)]+)\)", created[-1])
        status = ok(client, b"t%d" % round_, b"STATUS Again (UIDVALIDITY)")
        validity = re.search(rb"UIDVALIDITY (\d+)", status[0])
        assert mailbox_id
        assert validity
        seen.add((validity.group(1), mailbox_id.group(1)))
        ok(client, b"d%d" % round_, b"DELETE Again")
    assert len({v for v, _ in seen}) == 3
    assert len({m for _, m in seen}) == 3


def test_imap_bodystructure_sizes_and_disposition(client: Raw) -> None:
    """Part sizes exclude the part's header and the boundary CRLF; disposition is a list."""
    ok(client, b"s", b"SELECT INBOX")
    structure = ok(client, b"b1", b"FETCH 1 BODYSTRUCTURE")[0]
    assert b'("text" "plain" NIL NIL NIL "7BIT" 15 1 NIL NIL NIL NIL)' in structure
    assert b'"base64" 4 NIL ("attachment" ("filename" "a.bin")) NIL NIL)' in structure
    body1 = ok(client, b"b2", b"FETCH 1 BODY.PEEK[1]")[0]
    assert body1.endswith(b"{15}\r\n0123456789\r\nabc)")


def test_imap_binary_is_named_binary_and_decoded(client: Raw) -> None:
    """BINARY.PEEK[2] answers as BINARY[2] with the decoded octets; BINARY.SIZE matches."""
    ok(client, b"s", b"SELECT INBOX")
    reply = ok(client, b"b1", b"FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])")[0]
    assert b"BINARY[2] ~{3}\r\n\x00\x01\x02" in reply
    assert b"BINARY.SIZE[2] 3" in reply
    assert b"PEEK" not in reply


def test_imap_search_body_skips_headers_text_does_not(client: Raw) -> None:
    """SEARCH BODY looks in the body only (RFC 3501 6.4.4); SEARCH TEXT in both."""
    ok(client, b"s", b"SELECT INBOX")
    assert ok(client, b"q1", b"SEARCH BODY parts")[0] == b"* SEARCH"
    assert ok(client, b"q2", b"SEARCH TEXT parts")[0] == b"* SEARCH 1"
    assert ok(client, b"q3", b"SEARCH BODY 0123456789")[0] == b"* SEARCH 1"


def test_imap_envelope_has_the_date_header_and_names_as_written(client: Raw) -> None:
    """ENVELOPE's date is the Date header; names are as written (encoded-word, UTF-8)."""
    ok(client, b"s", b"SELECT INBOX")
    envelope = ok(client, b"e1", b"FETCH 1 ENVELOPE")[0]
    assert b'("Mon, 7 Dec 2026 10:00:00 +0100" "parts"' in envelope
    assert b'(("=?utf-8?q?J=C3=B6rg?=" NIL "j" "outside.test"))' in envelope
    assert "André".encode() in envelope
    assert b"?" not in envelope.split(b"=?utf-8?q?J=C3=B6rg?=")[1]


def test_imap_move_to_the_selected_mailbox(client: Raw) -> None:
    """MOVE to the selected mailbox is OK: the message gets a new UID, the old is expunged."""
    ok(client, b"s", b"SELECT INBOX")
    reply = ok(client, b"m1", b"UID MOVE 1 INBOX")
    assert any(b"COPYUID" in line and b" 1 2]" in line for line in reply), reply
    assert b"* 1 EXPUNGE" in reply
    assert ok(client, b"m2", b"UID SEARCH ALL")[0] == b"* SEARCH 2"


def test_imap_lsub_marks_unsubscribed_parents_noselect(client: Raw) -> None:
    """CREATE does not subscribe; LSUB shows an unsubscribed parent of a subscribed child
    as \\Noselect, and a subscribed one with no attributes."""
    ok(client, b"c1", b"CREATE top/")
    ok(client, b"c2", b"CREATE top/child")
    ok(client, b"c3", b"SUBSCRIBE top/child")
    assert ok(client, b"l1", b'LSUB "" "top"')[0] == b'* LSUB (\\Noselect) "/" top'
    ok(client, b"c4", b"SUBSCRIBE top")
    assert ok(client, b"l2", b'LSUB "" "top"')[0] == b'* LSUB () "/" top'


def test_imap_binary_append_is_stored_fetchable(client: Raw) -> None:
    """A literal8 APPEND with NUL in a binary part: BODY[1] is base64, BINARY[1] the octets."""
    message = (
        b"From: a@b\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\xff\r\n"
    )
    client.send(b"ap APPEND INBOX ~{%d+}\r\n" % len(message) + message + b"\r\n")
    assert client.until_tagged(b"ap")[-1].startswith(b"ap OK")
    ok(client, b"s", b"SELECT INBOX")
    body = ok(client, b"f1", b"FETCH 2 (BODY.PEEK[1] BINARY.PEEK[1])")[0]
    assert b"\x00" not in body.split(b"BINARY[1]")[0]
    assert b"BINARY[1] ~{5}\r\n\x00\x01\xff\r\n" in body
