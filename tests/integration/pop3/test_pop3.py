"""POP3 end to end: a real site server on 127.10.70.x, Python's poplib as the client.

Mail arrives through the site's SMTP listener; the client logs in over STLS (110) or implicit
TLS (995), lists, reads and deletes.
"""

from __future__ import annotations

import base64
import poplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clientsite import PASSWORD, ClientSite, client_site, client_tls

ADDRESS = "127.10.70.31"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ClientSite]:
    with client_site(tmp_path, ADDRESS) as running:
        running.add_user("jsmith", extra=("john.smith@sitea.example.com",))
        yield running


def fill(site: ClientSite, count: int) -> None:
    for n in range(count):
        site.deliver(
            "jsmith@sitea.example.com", f"pop{n}", body=f"line one\r\n.starts with a dot\r\nend {n}"
        )
    site.wait_for_inbox("jsmith", count)


def quit_quietly(client: poplib.POP3) -> None:
    try:
        client.quit()
    except (poplib.error_proto, OSError):
        client.close()


def test_pop3_capa_stls_user_pass_stat_list_retr_top(site: ClientSite) -> None:
    """Before STLS: no USER or SASL in CAPA and logins refused; after it the maildrop reads
    correctly, dot-stuffing included."""
    fill(site, 2)
    client = site.pop3()
    try:
        capa = client.capa()
        assert "STLS" in capa
        assert "USER" not in capa
        assert "SASL" not in capa
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\] TLS is required"):
            client.user("jsmith")
        client.stls(context=client_tls())
        capa = client.capa()
        assert "STLS" not in capa
        assert capa["SASL"] == ["PLAIN"]
        assert {"UIDL", "TOP", "USER", "RESP-CODES"} <= set(capa)
        client.user("jsmith@sitea.example.com")
        assert client.pass_(PASSWORD).startswith(b"+OK")
        count, size = client.stat()
        assert count == 2
        _, listing, _ = client.list()
        assert [line.split()[0] for line in listing] == [b"1", b"2"]
        assert sum(int(line.split()[1]) for line in listing) == size
        _, lines, _ = client.retr(1)
        assert b"Subject: pop0" in lines
        assert b".starts with a dot" in lines  # poplib undid our dot-stuffing
        assert lines[-1] == b"end 0"
        _, top, _ = client.top(2, 1)
        assert b"Subject: pop1" in top
        assert top[-1] == b"line one"
    finally:
        quit_quietly(client)


def test_pop3_uidl_is_stable_across_sessions_and_restarts(site: ClientSite) -> None:
    """UIDL values are the same in every session and after the server restarts."""
    fill(site, 3)

    def uidl() -> list[bytes]:
        client = site.pop3_tls()
        try:
            client.user("jsmith")
            client.pass_(PASSWORD)
            return client.uidl()[1]
        finally:
            quit_quietly(client)

    first = uidl()
    assert len(first) == 3
    assert len({line.split()[1] for line in first}) == 3
    assert uidl() == first
    site.restart()
    assert uidl() == first


def test_pop3_dele_takes_effect_only_at_quit(site: ClientSite) -> None:
    """DELE marks; a session that ends without QUIT deletes nothing; RSET unmarks; QUIT
    deletes, and the remaining UIDL is unchanged."""
    fill(site, 3)
    client = site.pop3_tls()
    client.user("jsmith")
    client.pass_(PASSWORD)
    client.dele(1)
    assert client.stat()[0] == 2
    client.close()  # dropped, not QUIT
    assert len(site.inbox("jsmith")) == 3
    client = site.pop3_tls()
    try:
        client.user("jsmith")
        client.pass_(PASSWORD)
        before = client.uidl()[1]
        client.dele(2)
        client.rset()
        assert client.stat()[0] == 3
        client.dele(1)
        with pytest.raises(poplib.error_proto, match="no such message"):
            client.retr(1)
        assert client.quit().startswith(b"+OK 1 message(s) deleted")
    finally:
        client.close()
    assert len(site.inbox("jsmith")) == 2
    client = site.pop3_tls()
    try:
        client.user("jsmith")
        client.pass_(PASSWORD)
        after = client.uidl()[1]
        assert [line.split()[1] for line in after] == [line.split()[1] for line in before[1:]]
    finally:
        quit_quietly(client)


def test_pop3_auth_plain_and_failures(site: ClientSite) -> None:
    """SASL PLAIN works after TLS; a bad password and an unknown user read the same; a second
    session on the same maildrop is refused [IN-USE]."""
    fill(site, 1)
    client = site.pop3_tls()
    try:
        token = base64.b64encode(b"\0jsmith\0" + PASSWORD.encode()).decode()
        assert client._shortcmd(f"AUTH PLAIN {token}").startswith(b"+OK")
        other = site.pop3_tls()
        try:
            other.user("jsmith")
            with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
                other.pass_(PASSWORD)
        finally:
            quit_quietly(other)
    finally:
        quit_quietly(client)
    answers = []
    for user, password in (("jsmith", "wrong"), ("nobody@sitea.example.com", PASSWORD)):
        client = site.pop3_tls()
        try:
            client.user(user)
            with pytest.raises(poplib.error_proto) as failed:
                client.pass_(password)
            answers.append(str(failed.value))
        finally:
            quit_quietly(client)
    assert answers[0] == answers[1]
    assert "[AUTH] authentication failed" in answers[0]
