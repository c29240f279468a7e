"""Authenticated submission end to end: 587 (STARTTLS, then AUTH) and 465 (implicit TLS), smtplib.

The site runs for real on 127.10.70.x; messages go through the queue and local delivery like
any other, and the recipient reads them with imaplib.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clientsite import PASSWORD, ClientSite, client_site, client_tls

ADDRESS = "127.10.70.21"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ClientSite]:
    with client_site(tmp_path, ADDRESS) as running:
        running.add_user("jsmith", extra=("john.smith@sitea.example.com",))
        running.add_user("mjones")
        yield running


def note(sender: str, to: str, subject: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@client>\r\n"
        f"\r\nbody of {subject}\r\n"
    ).encode()


def test_submission_587_needs_tls_then_auth_then_delivers(site: ClientSite) -> None:
    """No AUTH in clear (538), no MAIL without AUTH (530); after both the message is queued,
    delivered, and the Received header says ESMTPSA."""
    with site.submission() as client:
        client.ehlo()
        assert not client.has_extn("auth")
        assert client.has_extn("starttls")
        code, text = client.docmd("AUTH", "PLAIN AGpzbWl0aABzZWNyZXQ=")
        assert (code, text[:6]) == (538, b"5.7.11")
        code, text = client.docmd("MAIL", "FROM:<jsmith@sitea.example.com>")
        assert (code, text[:5]) == (530, b"5.7.0")
        client.starttls(context=client_tls())
        client.ehlo()
        assert client.has_extn("auth")
        code, text = client.docmd("MAIL", "FROM:<jsmith@sitea.example.com>")
        assert (code, text[:5]) == (530, b"5.7.0")
        client.login("jsmith@sitea.example.com", PASSWORD)
        refused = client.sendmail(
            "jsmith@sitea.example.com",
            ["mjones@sitea.example.com"],
            note("John Smith <jsmith@sitea.example.com>", "mjones@sitea.example.com", "hello"),
        )
        assert refused == {}
    stored = site.wait_for_inbox("mjones", 1)[0]
    assert b"with ESMTPSA id" in stored
    assert b"Subject: hello" in stored


def test_submission_465_implicit_tls_with_secondary_address(site: ClientSite) -> None:
    """465 is TLS from the first byte; a secondary address is the user's own too."""
    with site.submissions() as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        client.login("john.smith@sitea.example.com", PASSWORD)
        client.sendmail(
            "John.Smith@sitea.example.com",
            ["mjones@sitea.example.com"],
            note("john.smith@sitea.example.com", "mjones@sitea.example.com", "secondary"),
        )
    assert b"Subject: secondary" in site.wait_for_inbox("mjones", 1)[0]


def test_submission_refuses_other_peoples_addresses(site: ClientSite) -> None:
    """The envelope sender and the From header must be the user's own addresses."""
    with site.submissions() as client:
        client.login("jsmith", PASSWORD)
        with pytest.raises(smtplib.SMTPSenderRefused) as sender:
            client.sendmail(
                "mjones@sitea.example.com",
                ["mjones@sitea.example.com"],
                note("mjones@sitea.example.com", "x", "forged"),
            )
        assert (sender.value.smtp_code, sender.value.smtp_error[:5]) == (553, b"5.7.1")
        client.rset()
        with pytest.raises(smtplib.SMTPDataError) as data:
            client.sendmail(
                "jsmith@sitea.example.com",
                ["mjones@sitea.example.com"],
                note("The Boss <ceo@sitea.example.com>", "x", "forged2"),
            )
        assert data.value.smtp_code == 550
        assert b"<ceo@sitea.example.com> is not one of your addresses" in data.value.smtp_error
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("", ["mjones@sitea.example.com"], note("x@y", "x", "null"))
    assert site.inbox("mjones") == []


def test_submission_auth_failures_and_mechanisms(site: ClientSite) -> None:
    """A wrong password is 535 5.7.8; AUTH LOGIN works as well as PLAIN; outside mail is
    accepted for an authenticated user (it waits in the queue: no DNS here)."""
    with site.submissions() as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.login("jsmith", "not the password")
        assert failed.value.smtp_code == 535
        client.user, client.password = "jsmith", PASSWORD
        code, _ = client.auth("LOGIN", client.auth_login)
        assert code == 235
        refused = client.sendmail(
            "jsmith@sitea.example.com",
            ["friend@elsewhere.test"],
            note("jsmith@sitea.example.com", "friend@elsewhere.test", "out"),
        )
        assert refused == {}
    queued = [m for m in site.service.queue.entries() if m.sender == "jsmith@sitea.example.com"]
    assert len(queued) == 1


def test_submission_then_save_to_sent_then_recipient_reads(site: ClientSite) -> None:
    """The whole client round: send on 587, save a copy in Sent over IMAP, the recipient
    reads it over IMAP."""
    message = note("jsmith@sitea.example.com", "mjones@sitea.example.com", "roundtrip")
    with site.submission() as client:
        client.starttls(context=client_tls())
        client.login("jsmith", PASSWORD)
        client.sendmail("jsmith@sitea.example.com", ["mjones@sitea.example.com"], message)
    sender = site.imap_tls("jsmith")
    try:
        typ, _ = sender.append("Sent", "(\\Seen)", None, message)
        assert typ == "OK"
    finally:
        sender.logout()
    site.wait_for_inbox("mjones", 1)
    reader = site.imap_tls("mjones@sitea.example.com")
    try:
        typ, data = reader.select("INBOX")
        assert (typ, data) == ("OK", [b"1"])
        typ, fetched = reader.fetch("1", "(BODY[TEXT])")
        assert fetched[0][1] == b"body of roundtrip\r\n"  # type: ignore[index]
    finally:
        reader.logout()
    assert site.inbox("jsmith", "Sent") == [message]
