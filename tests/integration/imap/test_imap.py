"""IMAP4rev1 end to end: a real site server on 127.10.70.x, Python's imaplib as the client.

Mail arrives through the site's SMTP listener and local delivery, exactly as in production;
the client logs in over STARTTLS (143) or implicit TLS (993) and works with its folders.
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clientsite import PASSWORD, ClientSite, client_site, client_tls
from tests.support.databases import new_database_url

from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind

ADDRESS = "127.10.70.11"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ClientSite]:
    with client_site(tmp_path, ADDRESS) as running:
        running.add_user("jsmith", extra=("john.smith@sitea.example.com",))
        yield running


def close(client: imaplib.IMAP4) -> None:
    """LOGOUT if the session is still open, else just drop the socket."""
    try:
        if client.state != "LOGOUT":
            client.logout()
    except (imaplib.IMAP4.abort, OSError):
        pass


def ok(result: tuple[str, list[object]]) -> list[object]:
    status, data = result
    assert status == "OK", data
    return data


def test_imap_starttls_login_select_fetch_partial(site: ClientSite) -> None:
    """STARTTLS, LOGIN with the primary address, SELECT, FETCH headers, a partial body, UID."""
    site.deliver("jsmith@sitea.example.com", "first message", body="0123456789")
    site.wait_for_inbox("jsmith", 1)
    client = site.imap()
    try:
        assert "LOGINDISABLED" in client.capabilities
        client.starttls(ssl_context=client_tls())
        assert "LOGINDISABLED" not in client.capabilities
        assert "AUTH=PLAIN" in client.capabilities
        ok(client.login("jsmith@sitea.example.com", PASSWORD))
        data = ok(client.select("INBOX"))
        assert data == [b"1"]
        assert client.untagged_responses.get("UIDVALIDITY")
        header = ok(client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
        assert b"Subject: first message" in header[0][1]  # type: ignore[index]
        partial = ok(client.fetch("1", "(BODY.PEEK[TEXT]<2.5>)"))
        assert partial[0][1] == b"23456"  # type: ignore[index]
        uid = ok(client.uid("FETCH", "1:*", "(UID FLAGS)"))
        assert re.search(rb"UID 1 ", uid[0])  # type: ignore[arg-type]
        assert b"\\Seen" not in uid[0]  # type: ignore[operator]
        whole = ok(client.fetch("1", "(BODY[])"))
        assert whole[0][1].endswith(b"0123456789\r\n")  # type: ignore[index]
        flags = ok(client.fetch("1", "(FLAGS)"))
        assert b"\\Seen" in flags[0]  # type: ignore[operator]
    finally:
        close(client)


def test_imap_login_refused_in_clear_and_for_bad_passwords(site: ClientSite) -> None:
    """No login before TLS; a wrong password and an unknown user get the same answer."""
    client = site.imap()
    try:
        with pytest.raises(imaplib.IMAP4.error, match="LOGIN is disabled"):
            client.login("jsmith@sitea.example.com", PASSWORD)
    finally:
        close(client)
    answers = []
    for user, password in (
        ("jsmith@sitea.example.com", "wrong password"),
        ("nobody@sitea.example.com", PASSWORD),
        ("nobody", PASSWORD),
    ):
        client = site.imap_tls()
        try:
            with pytest.raises(imaplib.IMAP4.error) as failed:
                client.login(user, password)
            answers.append(str(failed.value))
        finally:
            client.shutdown()
    assert len(set(answers)) == 1, answers
    assert "authentication failed" in answers[0]


def test_imap_login_with_any_address_or_alias_any_case(site: ClientSite) -> None:
    """The login name is any of the mailbox's addresses, or its alias, in any case."""
    for name in ("JSmith@SiteA.example.com", "john.smith@sitea.example.com", "jsmith"):
        client = site.imap_tls(name)
        ok(client.select("INBOX"))
        client.logout()


def test_imap_uidvalidity_and_uids_survive_a_restart(site: ClientSite) -> None:
    """UIDVALIDITY and every message's UID are the same after the server restarts."""
    for n in range(3):
        site.deliver("jsmith@sitea.example.com", f"m{n}")
    site.wait_for_inbox("jsmith", 3)

    def state() -> tuple[bytes, list[bytes]]:
        client = site.imap_tls("jsmith")
        try:
            ok(client.select("INBOX"))
            validity = client.untagged_responses["UIDVALIDITY"][0]
            uids = ok(client.uid("SEARCH", "ALL"))[0].split()  # type: ignore[union-attr]
            ok(client.uid("STORE", uids[1], "+FLAGS", "(\\Deleted)"))
            return validity, uids
        finally:
            client.logout()

    before = state()
    site.restart()
    after = state()
    assert before == after
    assert before[1] == [b"1", b"2", b"3"]


def test_imap_append_copy_move_store_expunge_search(site: ClientSite) -> None:
    """APPEND with flags and keywords, COPY, MOVE, STORE, EXPUNGE and SEARCH keep UIDs right."""
    site.deliver("jsmith@sitea.example.com", "apples")
    site.deliver("jsmith@sitea.example.com", "pears")
    site.wait_for_inbox("jsmith", 2)
    client = site.imap_tls("jsmith")
    try:
        draft = b"From: jsmith@sitea.example.com\r\nSubject: draft one\r\n\r\nunfinished\r\n"
        typ, data = client.append("Drafts", "(\\Draft $Custom)", None, draft)
        assert typ == "OK"
        assert b"APPENDUID" in data[0]  # type: ignore[operator]
        ok(client.select("Drafts"))
        flags = ok(client.fetch("1", "(FLAGS)"))[0]
        assert b"\\Draft" in flags  # type: ignore[operator]
        assert b"$Custom" in flags  # type: ignore[operator]
        ok(client.select("INBOX"))
        found = ok(client.search(None, "SUBJECT", "pears"))
        assert found == [b"2"]
        typ, data = client.copy("1", "Trash")
        assert typ == "OK"
        assert b"COPYUID" in data[0]  # type: ignore[operator]
        typ, data = client._simple_command("MOVE", "2", "Junk")
        assert typ == "OK"
        assert ok(client.select("INBOX")) == [b"1"]
        ok(client.store("1", "+FLAGS", "(\\Deleted)"))
        expunged = ok(client.expunge())
        assert expunged == [b"1"]
        assert ok(client.select("INBOX")) == [b"0"]
        assert ok(client.select("Trash")) == [b"1"]
        assert ok(client.select("Junk")) == [b"1"]
        subject = ok(client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))[0][1]  # type: ignore[index]
        assert b"pears" in subject
        ok(client.create("Projects/2026"))
        listing = b"\n".join(ok(client.list()))  # type: ignore[arg-type]
        assert b"Projects/2026" in listing
        assert re.search(rb"\\Sent\b.*\"Sent\"|\\Sent\b.*Sent", listing)
        assert re.search(rb"\\Trash", listing)
        ok(client.rename("Projects", "Archive"))
        ok(client.delete("Archive/2026"))
    finally:
        close(client)
    assert len(site.inbox("jsmith", "Trash")) == 1
    assert site.inbox("jsmith", "Drafts")[0] == draft


def idle(client: imaplib.IMAP4) -> bytes:
    """Start IDLE on the selected folder; the tag, for `done`."""
    tag: bytes = client._new_tag()
    client.send(tag + b" IDLE\r\n")
    assert client.readline().startswith(b"+")
    return tag


def next_exists(client: imaplib.IMAP4) -> bytes:
    line = client.readline()
    while line.startswith(b"* ") and b"EXISTS" not in line:
        line = client.readline()
    return line


def done(client: imaplib.IMAP4, tag: bytes) -> bytes:
    client.send(b"DONE\r\n")
    line = client.readline()
    while not line.startswith(tag):
        line = client.readline()
    return line


def test_imap_idle_shows_a_new_delivery(site: ClientSite) -> None:
    """A client idling on INBOX is told EXISTS when mail is delivered by SMTP."""
    client = site.imap_tls("jsmith")
    try:
        ok(client.select("INBOX"))
        tag = idle(client)
        site.deliver("jsmith@sitea.example.com", "while idling")
        assert next_exists(client) == b"* 1 EXISTS\r\n"
        assert done(client, tag).startswith(tag + b" OK")
    finally:
        close(client)


def test_imap_idle_clients_of_several_mailboxes_each_see_their_mail(site: ClientSite) -> None:
    """Idle clients on two mailboxes and two on one: each is told about its own new mail."""
    site.add_user("mjones")
    clients = [site.imap_tls(user) for user in ("jsmith", "jsmith", "mjones")]
    try:
        tags = []
        for client in clients:
            ok(client.select("INBOX"))
            tags.append(idle(client))
        site.deliver("mjones@sitea.example.com", "for mary")
        assert next_exists(clients[2]) == b"* 1 EXISTS\r\n"
        site.deliver("jsmith@sitea.example.com", "for john")
        site.deliver("jsmith@sitea.example.com", "for john again")
        for client in clients[:2]:
            line = next_exists(client)
            if line == b"* 1 EXISTS\r\n":  # the two deliveries may be seen one by one
                line = next_exists(client)
            assert line == b"* 2 EXISTS\r\n"
        for client, tag in zip(clients, tags, strict=True):
            assert done(client, tag).startswith(tag + b" OK")
    finally:
        for client in clients:
            close(client)


def test_imap_user_of_another_site_is_told_the_home_host(tmp_path: Path, site: ClientSite) -> None:
    """A mailbox homed on another site gets a clear error naming that site's server."""
    other = AdminService.init(
        tmp_path / "SiteB",
        org="ExchangeORG",
        site="SiteB",
        server="ServerB",
        domain="siteb.example.com",
        listen=["127.10.70.12"],
        database_url=new_database_url(),
    )
    try:
        other.add_recipient(
            ObjectKind.MAILBOX,
            "bwayne",
            display_name="Bruce Wayne",
            password=PASSWORD,
        )
        lines = [line for line in other.export_directory() if '"site": "SiteB"' in line]
    finally:
        other.close()
    site.service.import_directory(lines)
    client = site.imap_tls()
    try:
        with pytest.raises(imaplib.IMAP4.error) as failed:
            client.login("bwayne@siteb.example.com", PASSWORD)
        answer = str(failed.value)
        assert "[REFERRAL imap://serverb.siteb.example.com/]" in answer  # RFC 2221
        assert "your mailbox is on site SiteB: connect to serverb.siteb.example.com" in answer
    finally:
        close(client)


def test_imap_sessions_see_each_others_changes_and_pop3_deletions(site: ClientSite) -> None:
    """Two IMAP sessions on INBOX: flags set and messages expunged in one are reported to the
    other at its next command; a POP3 deletion is reported as EXPUNGE too."""
    for n in range(3):
        site.deliver("jsmith@sitea.example.com", f"shared{n}")
    site.wait_for_inbox("jsmith", 3)
    first, second = site.imap_tls("jsmith"), site.imap_tls("jsmith")
    try:
        ok(first.select("INBOX"))
        ok(second.select("INBOX"))
        ok(first.store("1", "+FLAGS", "(\\Flagged)"))
        ok(second.noop())
        fetched = second.untagged_responses.pop("FETCH", [])
        assert any(b"\\Flagged" in item for item in fetched)  # type: ignore[operator]
        ok(first.store("2", "+FLAGS", "(\\Deleted)"))
        ok(first.expunge())
        ok(second.noop())
        assert second.untagged_responses.pop("EXPUNGE", []) == [b"2"]
        pop = site.pop3_tls()
        pop.user("jsmith")
        pop.pass_(PASSWORD)
        pop.dele(1)
        pop.quit()
        ok(first.noop())
        assert first.untagged_responses.pop("EXPUNGE", []) == [b"1"]
        assert ok(first.search(None, "ALL")) == [b"1"]
    finally:
        close(first)
        close(second)
