"""The console's session cookie and CSRF token: made from the admin token, nothing stored."""

from __future__ import annotations

from sitemail.web.console.session import (
    SESSION_SECONDS,
    check_csrf,
    new_session,
    read_session,
)

KEY = "the-admin-token"
NOW = 1_800_000_000.0


def test_a_new_session_reads_back_with_its_csrf_token() -> None:
    session = new_session(KEY, NOW)
    again = read_session(KEY, session.cookie, NOW + 10)
    assert again == session
    assert check_csrf(session, session.csrf)


def test_each_login_gets_its_own_session_and_csrf_token() -> None:
    one, two = new_session(KEY, NOW), new_session(KEY, NOW)
    assert one.cookie != two.cookie
    assert one.csrf != two.csrf
    assert not check_csrf(one, two.csrf)


def test_a_session_made_with_another_token_is_refused() -> None:
    """A new admin token logs every browser out."""
    session = new_session("an-old-token", NOW)
    assert read_session(KEY, session.cookie, NOW) is None


def test_an_expired_session_is_refused() -> None:
    session = new_session(KEY, NOW)
    assert read_session(KEY, session.cookie, NOW + SESSION_SECONDS - 1) is not None
    assert read_session(KEY, session.cookie, NOW + SESSION_SECONDS) is None


def test_a_session_from_the_future_is_refused() -> None:
    session = new_session(KEY, NOW + 3600)
    assert read_session(KEY, session.cookie, NOW) is None


def test_tampered_cookies_are_refused() -> None:
    session = new_session(KEY, NOW)
    issued, nonce, mac = session.cookie.split(".")
    forged = [
        f"{int(issued) + 1}.{nonce}.{mac}",  # a later start, to live longer
        f"{issued}.{nonce}x.{mac}",
        f"{issued}.{nonce}.{mac[:-1]}{'B' if mac.endswith('A') else 'A'}",  # one character off
        f"{issued}.{nonce}",
        "",
        "x" * 500,
        f"-{issued}.{nonce}.{mac}",
    ]
    for cookie in forged:
        assert read_session(KEY, cookie, NOW + 1) is None, cookie
    assert read_session(KEY, None, NOW) is None


def test_csrf_needs_the_exact_token() -> None:
    session = new_session(KEY, NOW)
    for presented in (None, "", session.csrf[:-1], session.csrf + "x", session.nonce):
        assert not check_csrf(session, presented)
