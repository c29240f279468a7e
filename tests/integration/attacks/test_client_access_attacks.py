"""Attacks on client access, over raw sockets against a real site server on 127.10.70.x.

- Command injection after STARTTLS/STLS (CVE-2011-0411 class): commands pipelined in clear
  behind the TLS request must be discarded, never run as if they came over TLS.
- Huge lines and literals are refused before they are read: the server hangs up long before
  a 16 MiB line or a 1 TB literal could be buffered, and keeps serving others.
- Connection floods: one client address gets at most `connections_per_client` IMAP and POP3
  sessions; the next is told why and disconnected.
- Brute force: failures are delayed, then the client address is locked out of IMAP, POP3 and
  submission alike, even for the right password.
"""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clientsite import PASSWORD, ClientSite, client_site, client_tls
from tests.support.rawclient import Raw

ADDRESS = "127.10.70.41"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ClientSite]:
    with client_site(
        tmp_path, ADDRESS, auth={"max_failures": 3}, limits={"connections_per_client": 2}
    ) as running:
        running.add_user("jsmith")
        yield running


def flood(raw: Raw, total: int, chunk: bytes) -> int:
    """Send up to `total` octets; how many went before the server hung up."""
    sent = 0
    try:
        while sent < total:
            raw.send(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        return sent
    return sent


# -- command injection ------------------------------------------------------------------------


def test_imap_commands_pipelined_after_starttls_are_discarded(site: ClientSite) -> None:
    """`a STARTTLS` + `b LOGIN ...` in one write: after TLS the session is not logged in and
    `b` was never answered."""
    raw = Raw(site.address, site.ports["imap"])
    try:
        raw.line()  # greeting
        raw.send(f'a STARTTLS\r\nb LOGIN jsmith "{PASSWORD}"\r\n'.encode())
        assert raw.line().startswith(b"a OK")
        raw.buffer = b""
        raw.start_tls()
        raw.send(b"c SELECT INBOX\r\n")
        answer = raw.until(b"c ")
        assert answer[-1].startswith(b"c BAD")
        assert b"authenticate" in answer[-1].lower()
        assert not any(line.startswith(b"b ") for line in answer)
    finally:
        raw.close()


def test_pop3_commands_pipelined_after_stls_are_discarded(site: ClientSite) -> None:
    """`STLS` + `USER jsmith` in one write: after TLS, PASS finds no USER."""
    raw = Raw(site.address, site.ports["pop3"])
    try:
        raw.line()
        raw.send(b"STLS\r\nUSER jsmith\r\n")
        assert raw.line().startswith(b"+OK")
        raw.buffer = b""
        raw.start_tls()
        raw.send(f"PASS {PASSWORD}\r\n".encode())
        assert raw.line() == b"-ERR send USER first"
    finally:
        raw.close()


def test_submission_commands_pipelined_after_starttls_are_discarded(site: ClientSite) -> None:
    """`STARTTLS` + `AUTH PLAIN <right credentials>` in one write: after TLS, MAIL still needs
    AUTH."""
    token = base64.b64encode(b"\0jsmith\0" + PASSWORD.encode()).decode()
    raw = Raw(site.address, site.ports["submission"])
    try:
        raw.line()
        raw.send(b"EHLO client.test\r\n")
        raw.until(b"250 ")
        raw.send(f"STARTTLS\r\nAUTH PLAIN {token}\r\n".encode())
        assert raw.line().startswith(b"220")
        raw.buffer = b""
        raw.start_tls()
        raw.send(b"EHLO client.test\r\n")
        raw.until(b"250 ")
        raw.send(b"MAIL FROM:<jsmith@sitea.example.com>\r\n")
        assert raw.line().startswith(b"530 5.7.0")
    finally:
        raw.close()


# -- sizes ------------------------------------------------------------------------------------

_MIB = 1024 * 1024


def test_imap_line_over_the_limit_is_refused_with_bye(site: ClientSite) -> None:
    """A command line longer than max_line (64 KiB) gets BYE and the connection closes; the
    server goes on serving others."""
    raw = Raw(site.address, site.ports["imap"])
    try:
        raw.line()
        raw.send(b"a " + b"x" * (70 * 1024))
        assert raw.line() == b"* BYE line too long (at most 65536 octets)"
        assert raw.closed_by_server()
    finally:
        raw.close()
    client = site.imap_tls("jsmith")
    client.logout()


def test_imap_endless_line_is_cut_off_before_it_is_buffered(site: ClientSite) -> None:
    """A client streaming a 64 MiB line is hung up on long before it has sent it all."""
    raw = Raw(site.address, site.ports["imap"])
    try:
        raw.line()
        assert flood(raw, 64 * _MIB, b"a" * 65536) < 64 * _MIB
    finally:
        raw.close()


def test_imap_huge_literals_are_refused_before_they_are_read(site: ClientSite) -> None:
    """LITERAL+ of a terabyte: BYE at once; a synchronising literal too big for APPEND or for
    LOGIN gets no continuation; both before any of it is sent."""
    raw = Raw(site.address, site.ports["imaps"])
    raw.sock = client_tls().wrap_socket(raw.sock)
    try:
        raw.line()
        raw.send(b"a LOGIN {1099511627776+}\r\n")
        assert raw.line() == b"* BYE literal too large (at most 52428800 octets)"
        assert raw.closed_by_server()
    finally:
        raw.close()
    raw = Raw(site.address, site.ports["imaps"])
    raw.sock = client_tls().wrap_socket(raw.sock)
    try:
        raw.line()
        raw.send(b"b LOGIN {100000}\r\n")
        answer = raw.line()
        assert answer.startswith(b"b BAD"), answer
        raw.send(f'c LOGIN jsmith "{PASSWORD}"\r\n'.encode())
        assert raw.until(b"c ")[-1].startswith(b"c OK")
        raw.send(b"d APPEND INBOX {999999999999}\r\n")
        answer = raw.line()
        assert answer.startswith(b"d BAD"), answer  # no "+" continuation: nothing was read
        raw.send(b"e NOOP\r\n")
        assert raw.until(b"e ")[-1].startswith(b"e OK")
    finally:
        raw.close()
    assert site.inbox("jsmith") == []


def test_pop3_long_lines_are_refused(site: ClientSite) -> None:
    """A command over 255 octets gets -ERR and a close; an endless one is cut off early."""
    raw = Raw(site.address, site.ports["pop3"])
    try:
        raw.line()
        raw.send(b"USER " + b"x" * 300 + b"\r\n")
        assert raw.line() == b"-ERR line too long"
        assert raw.closed_by_server()
    finally:
        raw.close()
    raw = Raw(site.address, site.ports["pop3"])
    try:
        raw.line()
        assert flood(raw, 64 * _MIB, b"a" * 65536) < 64 * _MIB
    finally:
        raw.close()


# -- brute force ------------------------------------------------------------------------------


def test_brute_force_locks_the_client_address_out_of_every_protocol(site: ClientSite) -> None:
    """Three failures over IMAP lock this address out: the right password is then refused on
    IMAP, POP3 and submission alike, with a reply that names no user."""
    for _ in range(3):
        client = site.imap_tls()
        try:
            with pytest.raises(imaplib.IMAP4.error, match="authentication failed"):
                client.login("jsmith", "guess")
        finally:
            client.shutdown()
    client = site.imap_tls()
    try:
        with pytest.raises(imaplib.IMAP4.error, match="too many failed logins"):
            client.login("jsmith", PASSWORD)
    finally:
        client.shutdown()
    pop = site.pop3_tls()
    try:
        pop.user("jsmith")
        with pytest.raises(poplib.error_proto, match="too many failed logins"):
            pop.pass_(PASSWORD)
    finally:
        pop.close()
    with site.submissions() as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError) as locked:
            smtp.login("jsmith", PASSWORD)
        assert locked.value.smtp_code == 454


# -- connection floods ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port_name", "refusal"),
    [
        ("imap", b"* BYE [UNAVAILABLE] too many connections from your address"),
        ("pop3", b"-ERR [SYS/TEMP] too many connections from your address"),
    ],
)
def test_connections_per_client_address_are_limited(
    site: ClientSite, port_name: str, refusal: bytes
) -> None:
    """Two sessions are served; the third from the same address is refused with a reason;
    when one ends, a new one is served again."""
    first, second = (Raw(site.address, site.ports[port_name]) for _ in range(2))
    try:
        assert first.line().startswith((b"* OK", b"+OK"))
        assert second.line().startswith((b"* OK", b"+OK"))
        third = Raw(site.address, site.ports[port_name])
        try:
            assert third.line() == refusal
            assert third.closed_by_server()
        finally:
            third.close()
        first.close()
        for _ in range(200):  # the server notices the close asynchronously: bounded retries
            again = Raw(site.address, site.ports[port_name])
            try:
                if again.line().startswith((b"* OK", b"+OK")):
                    break
            except ConnectionError:
                pass
            finally:
                again.close()
        else:
            raise AssertionError("no new session after one ended")
    finally:
        first.close()
        second.close()
