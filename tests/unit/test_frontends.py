"""The worker line protocol: login requests and results survive the pipe, and nothing else
is taken for one (sitemail.frontends)."""

from __future__ import annotations

import pytest

from sitemail.directory.auth import MAX_PASSWORD, AuthOutcome, AuthResult
from sitemail.frontends import decode_login, decode_result, encode_login, encode_result


def test_login_request_round_trips_any_text_as_one_token() -> None:
    """Spaces, newlines and non-ASCII in the name or password stay inside one token."""
    token = encode_login("Jörg Smith@example.com", "pa ss\nword ✓", "127.26.0.1")
    assert b" " not in token
    assert b"\n" not in token
    assert decode_login(token) == ("Jörg Smith@example.com", "pa ss\nword ✓", "127.26.0.1")


def test_login_result_round_trips_every_field() -> None:
    """An OK result keeps its mailbox, alias, addresses and home; a refusal its outcome."""
    ok = AuthResult(
        AuthOutcome.OK,
        "ok",
        "guid-1",
        "jsmith",
        frozenset({"jsmith@example.com", "j@example.com"}),
        "SiteA",
        "servera.example.com",
    )
    assert decode_result(encode_result(ok)) == ok
    locked = AuthResult(AuthOutcome.LOCKED, "too many failed logins; try again later")
    assert decode_result(encode_result(locked)) == locked


@pytest.mark.parametrize("token", [b"", b"!!!", b"WzFd", b"WyJhIiwgMSwgImIiXQ=="])
def test_malformed_tokens_are_refused_not_raised(token: bytes) -> None:
    """Not base64, not JSON, the wrong shape or types: ValueError, never anything else."""
    with pytest.raises(ValueError):
        decode_login(token)
    with pytest.raises(ValueError):
        decode_result(token)


def test_login_request_too_big_for_one_pipe_write_goes_as_one_the_server_refuses() -> None:
    """A name or password that would make the line longer than PIPE_BUF is sent cut to an
    over-long password, which the server counts as a failure, never written in part."""
    for login, password in [("a" * 5000, "pw"), ("jsmith", "✓" * 3000)]:
        token = encode_login(login, password, "127.26.0.1")
        assert len(b"A 123456789 " + token + b"\n") <= 4096
        sent_login, sent_password, peer = decode_login(token)
        assert len(sent_password) > MAX_PASSWORD
        assert login.startswith(sent_login)
        assert peer == "127.26.0.1"
