"""IMAP safety over real sockets: no client line and no stored message can stop the site.

Each case of issue 18's "Why": the one-line hang before login, names that are not modified
UTF-7, messages an Internet sender can write (broken address headers, `Name :` headers,
3,000-level MIME nesting, binary parts) fetched and searched every way, disconnects, and
the bounds on what a client sends. A real site on 127.26.0.x; raw sockets or imaplib.
"""

from __future__ import annotations

import imaplib
import logging
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clientsite import PASSWORD, ClientSite, client_site, client_tls
from tests.support.rawimap import USER, raw_plain, raw_tls

ADDRESS = "127.26.0.11"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ClientSite]:
    with client_site(tmp_path, ADDRESS) as running:
        running.add_user("jsmith")
        yield running


def smtp_answers_within(site: ClientSite, seconds: float) -> bool:
    with socket.create_connection((site.address, site.ports["smtp"]), timeout=seconds) as sock:
        sock.settimeout(seconds)
        return sock.recv(512).startswith(b"220")


def test_imap_select_with_bad_mutf7_before_login_keeps_the_site_up(site: ClientSite) -> None:
    """`a2 SELECT foo&bar` in clear before login: a tagged BAD at once, port 25 still answers."""
    client = raw_plain(site)
    try:
        client.send(b"a2 SELECT foo&bar\r\n")
        assert smtp_answers_within(site, 1.0)
        reply = client.until_tagged(b"a2")
        assert reply[-1].startswith(b"a2 BAD"), reply
        assert b"authenticate first" in reply[-1]
        assert client.command(b"a3", b"NOOP")[-1].startswith(b"a3 OK")
    finally:
        client.close()


def test_imap_commands_before_login_are_refused_before_their_arguments(site: ClientSite) -> None:
    """Every command needing a login is refused by name, whatever its arguments hold."""
    client = raw_plain(site)
    try:
        for n, text in enumerate(
            [
                b"SELECT &&&&&&&",
                b"LIST " + b"(" * 5000,
                b"FETCH 1:* (" + b"BODY[1." * 3000 + b")",
                b"UID SEARCH " + b"(" * 5000,
                b'CREATE "\xff\xfe&"',
            ]
        ):
            tag = b"t%d" % n
            reply = client.command(tag, text)
            assert reply[-1].startswith(tag + b" BAD"), reply
    finally:
        client.close()


def test_imap_names_not_in_modified_utf7_get_no(site: ClientSite) -> None:
    """SELECT, CREATE and RENAME with invalid modified UTF-7 get NO; the session goes on.

    (A LIST pattern that is not modified UTF-7 is taken as it is, as Dovecot does.)"""
    client = raw_tls(site)
    try:
        for n, text in enumerate(
            [b"SELECT foo&bar", b'CREATE "&Jjo"', b'CREATE "a&AGE-b"', b'RENAME INBOX "x&"']
        ):
            tag = b"m%d" % n
            reply = client.command(tag, text)
            assert reply[-1].startswith(tag + b" NO"), reply
            assert b"mUTF-7" in reply[-1]
        assert client.command(b"c1", b'CREATE "caf&AOk-"')[-1].startswith(b"c1 OK")
        listed = client.command(b"c2", b'LIST "" "caf*"')
        assert any(b'"caf&AOk-"' in line or b" caf&AOk-" in line for line in listed), listed
    finally:
        client.close()


DEEP = 3000
MALFORMED = {
    "empty-sender": b"From: a@outside.test\r\nSender:\r\nSubject: empty sender\r\n\r\nbody\r\n",
    "two-senders": (
        b"From: a@outside.test\r\nSender: a@outside.test, b@outside.test\r\n"
        b"Subject: two senders\r\n\r\nbody\r\n"
    ),
    "space-before-colon": (
        b"From : a@outside.test\r\nTo : jsmith@sitea.example.com\r\n"
        b"Reply-To : r@outside.test\r\nSubject : spaced\r\n\r\nbody\r\n"
    ),
    "deep-nesting": b"From: a@outside.test\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    + b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(DEEP)
    )
    + b"Content-Type: text/plain\r\n\r\nneedle\r\n",
    "binary-part": (
        b"From: a@outside.test\r\nSubject: binary\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        b"\x00\x01\xff\xfe bytes\r\n--XX--\r\n"
    ),
    "deep-comments": b"From: "
    + b"\r\n ".join([b"(" * 500] * 6)  # folded: SMTP lines are at most 1,000 octets
    + b"a@outside.test\r\nSubject: c\r\n\r\nbody\r\n",
    "bad-base64": (
        b"From: a@outside.test\r\nSubject: b64\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8*!x\r\n"
    ),
    "eight-bit-headers": "From: Jörg <j@outside.test>\r\nSubject: café\r\n\r\nbody\r\n".encode(),
}


def deliver_raw(site: ClientSite, message: bytes) -> None:
    """Through the MX port, as any Internet sender would (BDAT-free DATA, dot-stuffed)."""
    with site.smtp() as smtp:
        smtp.sendmail("a@outside.test", [USER], message)


def append_raw(site: ClientSite, message: bytes) -> None:
    """The user's own client APPENDs it: the way in for what SMTP refuses at its edge (a NUL,
    or a shape beyond core.mailshape's bounds), and what a mailbox may hold from before."""
    client = raw_tls(site)
    client.send(b"a0 APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
    assert client.until_tagged(b"a0")[-1].startswith(b"a0 OK")
    client.close()


def store(site: ClientSite, message: bytes) -> None:
    """Into jsmith's INBOX: over SMTP when SMTP takes it, else by APPEND."""
    if b"\x00" in message or message is MALFORMED["deep-nesting"]:
        append_raw(site, message)
    else:
        deliver_raw(site, message)


def test_smtp_refuses_a_message_nested_past_the_bound(site: ClientSite) -> None:
    """The 3,000-level message is refused at DATA (550 5.6.0): SMTP never stores one."""
    with site.smtp() as smtp, pytest.raises(smtplib.SMTPDataError) as refused:
        smtp.sendmail("a@outside.test", [USER], MALFORMED["deep-nesting"])
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.6.0")


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_imap_malformed_message_is_answered_every_way(site: ClientSite, name: str) -> None:
    """ENVELOPE, BODYSTRUCTURE, BODY[], BODY[1], BINARY[1], BINARY.SIZE[1] and SEARCH: all OK."""
    store(site, MALFORMED[name])
    site.wait_for_inbox("jsmith", 1)
    client = raw_tls(site)
    try:
        assert client.command(b"s0", b"SELECT INBOX")[-1].startswith(b"s0 OK")
        for n, text in enumerate(
            [
                b"FETCH 1 (ENVELOPE)",
                b"FETCH 1 (BODYSTRUCTURE)",
                b"FETCH 1 (BODY)",
                b"FETCH 1 (BODY.PEEK[])",
                b"FETCH 1 (BODY.PEEK[1])",
                b"FETCH 1 (BODY.PEEK[1.MIME])",
                b"FETCH 1 (BINARY.PEEK[1])",
                b"FETCH 1 (BINARY.SIZE[1])",
                b"SEARCH BODY needle",
                b"SEARCH TEXT needle",
                b"SEARCH FROM outside",
                b"SEARCH SENTBEFORE 1-Jan-2030",
            ]
        ):
            tag = b"f%d" % n
            try:
                reply = client.command(tag, text)
            except ConnectionError:
                pytest.fail(f"connection closed after {text!r}")
            assert reply[-1].startswith(tag + b" OK"), (text, reply[-1][:200])
    finally:
        client.close()


def test_imap_mime_nesting_is_capped_at_100_levels(site: ClientSite) -> None:
    """BODYSTRUCTURE of a 3,000-level message stops at 100 levels; the rest is one part."""
    append_raw(site, MALFORMED["deep-nesting"])
    site.wait_for_inbox("jsmith", 1)
    client = raw_tls(site)
    try:
        client.command(b"s0", b"SELECT INBOX")
        reply = client.command(b"f1", b"FETCH 1 (BODYSTRUCTURE)")
        assert reply[-1].startswith(b"f1 OK")
        structure = reply[0]
        assert 100 <= structure.count(b'"mixed"') <= 101
        assert b'"application" "octet-stream"' in structure
        # SEARCH BODY does not see into the opaque part's text as a text part
        assert client.command(b"f2", b"SEARCH BODY needle")[-1].startswith(b"f2 OK")
    finally:
        client.close()


def test_imap_every_bad_input_gets_a_tagged_or_untagged_answer(site: ClientSite) -> None:
    """Garbage, unknown commands, missing arguments, deep nesting: BAD each time, no drop."""
    client = raw_tls(site)
    try:
        client.command(b"s0", b"SELECT INBOX")
        for n, text in enumerate(
            [
                b"FOO",
                b"FETCH",
                b"FETCH 1:* (" * 2,
                b"UID FOO",
                b"SEARCH " + b"(" * 3000 + b"ALL" + b")" * 3000,
                b"STORE 1 +FLAGS (" + b"(" * 3000,
                b"\x00\x01\x02",
            ]
        ):
            tag = b"g%d" % n
            reply = client.command(tag, text)
            assert reply[-1].startswith((tag + b" BAD", tag + b" NO")), (text[:40], reply)
        client.send(b"\r\n")
        assert client.until_tagged(b"*")[-1].startswith(b"* BAD")
        assert client.command(b"z", b"NOOP")[-1].startswith(b"z OK")
    finally:
        client.close()


def test_imap_long_mailbox_names_are_refused(site: ClientSite) -> None:
    """A mailbox name over the limit gets NO before any work; the session goes on."""
    client = raw_tls(site)
    try:
        reply = client.command(b"c1", b'CREATE "' + b"x" * 2000 + b'"')
        assert reply[-1].startswith(b"c1 NO"), reply
        assert client.command(b"c2", b"NOOP")[-1].startswith(b"c2 OK")
    finally:
        client.close()


def test_imap_client_disconnects_log_no_traceback(
    site: ClientSite, caplog: pytest.LogCaptureFixture
) -> None:
    """Clients that vanish mid-command, mid-literal or mid-TLS leave no traceback in the log."""
    caplog.set_level(logging.DEBUG)
    client = raw_tls(site)
    client.send(b"a1 SELECT INBOX\r\na2 APPEND INBOX {100+}\r\nhalf")
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()
    plain = raw_plain(site)
    plain.send(b"a1 CAPABILITY\r\n")
    plain.close()
    sock = socket.create_connection((site.address, site.ports["imaps"]), timeout=5)
    sock.sendall(b"\x16\x03\x01\x00\xffgarbage")
    sock.close()
    with imaplib.IMAP4_SSL(site.address, site.ports["imaps"], ssl_context=client_tls()) as good:
        good.login(USER, PASSWORD)
        time.sleep(0.3)
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not tracebacks, [r.getMessage() for r in tracebacks]


def test_imap_overlong_line_gets_bye_and_the_site_goes_on(site: ClientSite) -> None:
    """A line over max_line: BYE with the reason; new sessions and SMTP still served."""
    client = raw_tls(site)
    try:
        client.send(b"a1 NOOP " + b"x" * 70000 + b"\r\n")
        reply = client.until_tagged(b"a1")
        assert reply[-1].startswith(b"* BYE"), reply
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        client.close()
    assert smtp_answers_within(site, 5.0)
    again = raw_tls(site)
    assert again.command(b"n", b"NOOP")[-1].startswith(b"n OK")
    again.close()
