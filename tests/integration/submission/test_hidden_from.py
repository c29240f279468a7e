"""Submission reads the header as a mail client will: no second From hides from the check.

An authenticated user could add a From naming another user behind a header line without a
colon, or written `From :`; the submission policy read one From, a client reading the message
showed two (issue 19). Such lines, a second From and addresses the two address parsers read
differently are refused with 550 5.6.0 over real TLS submission; a well-formed message with a
folded, encoded From still goes through.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clientsite import PASSWORD, ClientSite, client_site

ADDRESS = "127.28.3.1"
OWN = "jsmith@sitea.example.com"
OTHER = "mjones@sitea.example.com"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ClientSite]:
    with client_site(tmp_path, ADDRESS) as running:
        running.add_user("jsmith")
        running.add_user("mjones")
        yield running


def message(header: str, subject: str) -> bytes:
    return (
        f"{header}To: {OTHER}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@client>\r\n"
        f"\r\nbody of {subject}\r\n"
    ).encode()


HIDDEN = {
    "no-colon": f"From: {OWN}\r\nX-Hidden-Line\r\nFrom: {OTHER}\r\n",
    "space-before-colon": f"From: {OWN}\r\nFrom : {OTHER}\r\n",
    "tab-before-colon": f"From\t: {OTHER}\r\nFrom: {OWN}\r\n",
    "mbox-line": f"From {OTHER} Mon Dec  7 12:00:00 2026\r\nFrom: {OWN}\r\n",
    "two-froms": f"From: {OWN}\r\nFROM: {OTHER}\r\n",
    "two-identical-froms": f"From: {OWN}\r\nfrom: {OWN}\r\n",
    "ambiguous-address": f"From: {OWN} <{OTHER}>\r\n",
    "two-senders": f"From: {OWN}\r\nSender: {OWN}\r\nSender: {OWN}\r\n",
    "nul": f"From: {OWN}\r\nX-Note: a\x00From: {OTHER}\r\n",
}


def test_submission_refuses_a_hidden_or_second_from(site: ClientSite) -> None:
    """Each way of hiding a From is refused with 550 5.6.0; nothing reaches the inbox, and
    a well-formed message from the same session is delivered."""
    with site.submissions() as client:
        client.login(OWN, PASSWORD)
        for name, header in HIDDEN.items():
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail(OWN, [OTHER], message(header, name))
            assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (550, b"5.6.0"), name
            client.rset()
        folded = f"From: =?utf-8?q?John_Sm=C3=AFth?=\r\n <{OWN}>\r\nSender: {OWN}\r\n"
        assert client.sendmail(OWN, [OTHER], message(folded, "fine")) == {}
    [stored] = site.wait_for_inbox("mjones", 1)
    assert b"Subject: fine" in stored
    assert site.inbox("mjones") == [stored]


def test_submission_still_refuses_another_users_single_from(site: ClientSite) -> None:
    """A well-formed From naming someone else stays 550 5.7.1, as before."""
    with site.submission() as client:
        client.starttls()
        client.login(OWN, PASSWORD)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(OWN, [OTHER], message(f"From: Boss <{OTHER}>\r\n", "forged"))
        assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (550, b"5.7.1")
        assert f"<{OTHER}> is not one of your addresses".encode() in refused.value.smtp_error


def test_submission_reads_a_header_longer_than_the_start_kept_in_memory(site: ClientSite) -> None:
    """A 1.5 MB message (spooled to a file) whose header runs past the 256 KiB kept in memory:
    a second From after that point is still found (550 5.6.0); the same header without it,
    a From of the user's own, goes through."""
    padding = "".join(f"X-Pad-{i}: {'p' * 700}\r\n" for i in range(450))  # about 320 KB
    body = "a line of the body of a big message\r\n" * 30_000
    hidden = f"From: {OWN}\r\n{padding}From: {OTHER}\r\n"
    with site.submissions() as client:
        client.login(OWN, PASSWORD)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(OWN, [OTHER], message(hidden, "long") + body.encode())
        assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (550, b"5.6.0")
        client.rset()
        fine = message(f"From: {OWN}\r\n{padding}", "long-fine") + body.encode()
        assert client.sendmail(OWN, [OTHER], fine) == {}
    [stored] = site.wait_for_inbox("mjones", 1)
    assert b"Subject: long-fine" in stored
