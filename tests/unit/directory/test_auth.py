"""The client Authenticator: login names, one answer for every failure, delays and lock-out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.support.databases import new_database_url

from sitemail.admin.service import AdminService
from sitemail.config import AuthConfig
from sitemail.core.clock import ManualClock
from sitemail.directory import ObjectKind
from sitemail.directory.auth import Authenticator, AuthOutcome, AuthResult

PASSWORD = "s3cret pass"
PEER = "192.0.2.7"


class Sleeps:
    """Records the delays the authenticator asks for instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def service(site_a: AdminService) -> AdminService:
    site_a.add_recipient(
        ObjectKind.MAILBOX,
        "jsmith",
        display_name="John Smith",
        password=PASSWORD,
        extra_addresses=["john@sitea.example.com"],
    )
    site_a.add_recipient(ObjectKind.MAILBOX, "nopass", display_name="No Password")
    site_a.add_recipient(
        ObjectKind.CONTACT, "outside", display_name="Outside", target="x@outside.test"
    )
    return site_a


def make(service: AdminService, **settings: float) -> tuple[Authenticator, ManualClock, Sleeps]:
    clock = ManualClock()
    sleeps = Sleeps()
    values: dict[str, float] = {
        "failure_delay": 2.0,
        "max_failures": 3,
        "window": 600.0,
        "lockout": 900.0,
    }
    config = AuthConfig(**{**values, **settings})  # type: ignore[arg-type]
    return Authenticator(service.directory, clock, config, sleep=sleeps), clock, sleeps


def check(auth: Authenticator, login: str, password: str, peer: str = PEER) -> AuthResult:
    return asyncio.run(auth.authenticate(login, password, peer))


def test_auth_accepts_any_address_or_the_alias_in_any_case(service: AdminService) -> None:
    """Primary, secondary, upper case, and the alias all name the same mailbox."""
    auth, _, sleeps = make(service)
    guids = set()
    for name in ("jsmith@sitea.example.com", "JOHN@SITEA.EXAMPLE.COM", "JSmith"):
        result = check(auth, name, PASSWORD)
        assert result.outcome is AuthOutcome.OK
        guids.add(result.mailbox)
    assert len(guids) == 1
    assert result.addresses == {"jsmith@sitea.example.com", "john@sitea.example.com"}
    assert sleeps.delays == []


def test_auth_every_failure_reads_the_same_after_the_same_delay(service: AdminService) -> None:
    """Wrong password, unknown user, no password set, a contact, empty and huge input: one
    outcome, one text, one delay each (no user enumeration)."""
    auth, _, sleeps = make(service, max_failures=100)
    attempts = [
        ("jsmith@sitea.example.com", "wrong"),
        ("nobody@sitea.example.com", PASSWORD),
        ("nopass", PASSWORD),
        ("outside", PASSWORD),
        ("", PASSWORD),
        ("jsmith", ""),
        ("x" * 5000, PASSWORD),
    ]
    results = [check(auth, login, password) for login, password in attempts]
    assert {(r.outcome, r.text) for r in results} == {(AuthOutcome.FAILED, "authentication failed")}
    assert sleeps.delays == [2.0] * len(attempts)


def test_auth_locks_out_a_client_address_after_repeated_failures(service: AdminService) -> None:
    """After max_failures the address is locked out, even with the right password, without
    the password being checked; other addresses are not; the lock expires."""
    auth, clock, sleeps = make(service)
    for name in ("nobody1", "nobody2", "nobody3"):
        assert check(auth, name, "guess").outcome is AuthOutcome.FAILED
    locked = check(auth, "jsmith", PASSWORD)
    assert locked.outcome is AuthOutcome.LOCKED
    assert "too many failed logins" in locked.text
    assert "jsmith" not in locked.text
    assert sleeps.delays == [2.0] * 4
    assert check(auth, "jsmith", PASSWORD, peer="192.0.2.8").outcome is AuthOutcome.OK
    clock.advance(901)
    assert check(auth, "jsmith", PASSWORD).outcome is AuthOutcome.OK


def test_auth_locks_an_account_guessed_from_many_addresses(service: AdminService) -> None:
    """Failures for one account add up whatever address they come from: a new address gets
    no answer once the account is locked, but an address that logged in as it before does."""
    auth, clock, _ = make(service)
    assert check(auth, "jsmith", PASSWORD, peer="192.0.2.50").outcome is AuthOutcome.OK
    for n in range(3):
        assert check(auth, "jsmith", "guess", peer=f"198.51.100.{n}").outcome is AuthOutcome.FAILED
    assert check(auth, "jsmith", PASSWORD, peer="198.51.100.9").outcome is AuthOutcome.LOCKED
    assert check(auth, "john@sitea.example.com", PASSWORD, peer="198.51.100.9").outcome is (
        AuthOutcome.LOCKED
    )  # another name of the same mailbox is the same account
    assert check(auth, "jsmith", PASSWORD, peer="192.0.2.50").outcome is AuthOutcome.OK
    clock.advance(901)
    assert check(auth, "jsmith", PASSWORD, peer="198.51.100.9").outcome is AuthOutcome.OK


def test_auth_another_accounts_success_resets_nothing(service: AdminService) -> None:
    """A success as one account does not clear the failures counted for another one from
    the same address (the reset that let anyone with an account brute-force the others)."""
    service.add_recipient(ObjectKind.MAILBOX, "alice", display_name="Alice", password="alice pw")
    auth, _, _ = make(service)
    for _ in range(2):
        assert check(auth, "alice", "guess").outcome is AuthOutcome.FAILED
        assert check(auth, "jsmith", PASSWORD).outcome is AuthOutcome.OK
    assert check(auth, "alice", "guess").outcome is AuthOutcome.FAILED
    assert check(auth, "alice", "alice pw").outcome is AuthOutcome.LOCKED
    assert check(auth, "alice", "alice pw", peer="192.0.2.99").outcome is AuthOutcome.LOCKED


def test_auth_parallel_attempts_take_slots_before_checking(service: AdminService) -> None:
    """Twenty attempts at once from one address: only max_failures passwords are checked,
    the right one among the later ones is refused unchecked."""
    auth, _, _ = make(service)
    held = asyncio.Event()

    async def slow_sleep(_seconds: float) -> None:
        await held.wait()  # every failure is still being answered while the others arrive

    auth._sleep = slow_sleep

    async def burst() -> list[AuthResult]:
        guesses = [auth.authenticate("jsmith", f"guess{n}", PEER) for n in range(15)]
        tasks = [asyncio.ensure_future(g) for g in guesses]
        await asyncio.sleep(0.5)
        right = asyncio.ensure_future(auth.authenticate("jsmith", PASSWORD, PEER))
        await asyncio.sleep(0.2)
        held.set()
        return await asyncio.gather(*tasks, right)

    results = asyncio.run(burst())
    outcomes = [r.outcome for r in results]
    assert outcomes.count(AuthOutcome.FAILED) == 3
    assert outcomes.count(AuthOutcome.LOCKED) == 13
    assert outcomes[-1] is AuthOutcome.LOCKED


def test_auth_failures_outside_the_window_do_not_add_up(service: AdminService) -> None:
    """Failures older than `window` are forgotten; a success clears its own account's count."""
    auth, clock, _ = make(service)
    check(auth, "jsmith", "guess")
    check(auth, "jsmith", "guess")
    clock.advance(601)
    check(auth, "jsmith", "guess")
    assert check(auth, "jsmith", PASSWORD).outcome is AuthOutcome.OK
    check(auth, "jsmith", "guess")
    check(auth, "jsmith", "guess")
    assert check(auth, "jsmith", PASSWORD).outcome is AuthOutcome.OK


def test_auth_sends_users_of_another_site_to_their_home_server(
    service: AdminService, tmp_path: Path
) -> None:
    """A mailbox homed on SiteB (a replica here) is told SiteB's server, password or not,
    without a failure delay or a count towards the lock-out."""
    other = AdminService.init(
        tmp_path / "SiteB",
        org="ExchangeORG",
        site="SiteB",
        server="ServerB",
        domain="siteb.example.com",
        listen=["127.0.0.1"],
        database_url=new_database_url(),
    )
    try:
        other.add_recipient(ObjectKind.MAILBOX, "bwayne", display_name="B W", password=PASSWORD)
        lines = [line for line in other.export_directory() if '"site": "SiteB"' in line]
    finally:
        other.close()
    service.import_directory(lines)
    auth, _, sleeps = make(service, max_failures=1)
    for password in (PASSWORD, "anything"):
        result = check(auth, "bwayne@siteb.example.com", password)
        assert result.outcome is AuthOutcome.ELSEWHERE
        assert (result.home_site, result.home_host) == ("SiteB", "serverb.siteb.example.com")
        assert result.mailbox == ""
    assert sleeps.delays == []
    assert check(auth, "jsmith", PASSWORD).outcome is AuthOutcome.OK
