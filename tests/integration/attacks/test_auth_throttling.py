"""Password guessing over real sockets against a site on 127.27.0.x (issue 19's findings).

- The alternate-account reset: a correct login as bob after every 9 wrong guesses for alice
  used to clear the address's count, so alice was never locked. Now it is, after 10.
- Parallel logins: 20 wrong passwords sent at once from one address on 993, 995 and 465 used
  to be checked every one (the right password was accepted at attempt 16). Now exactly
  `max_failures` are checked, the others and the right password are refused unchecked.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.clientsite import PASSWORD, ClientSite, client_site

ADDRESS = "127.27.0.10"
MAX_FAILURES = 10
LOCKED = "too many failed logins"


@pytest.fixture(params=[0.05])
def site(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ClientSite]:
    """SiteA with alice and bob; the failure delay is the test's parameter (default 0.05 s)."""
    with client_site(
        tmp_path,
        ADDRESS,
        auth={"max_failures": MAX_FAILURES, "failure_delay": request.param},
        limits={"connections_per_client": 100},
    ) as running:
        running.add_user("alice", password="alice's real password")
        running.add_user("bob")
        yield running


def imap_login(site: ClientSite, user: str, password: str) -> str:
    """The server's answer to one IMAP LOGIN on 993: "ok" or its refusal text."""
    client = site.imap_tls()
    try:
        client.login(user, password)
    except imaplib.IMAP4.error as exc:
        return str(exc)
    finally:
        client.shutdown()
    return "ok"


def pop3_login(site: ClientSite, user: str, password: str) -> str:
    client = site.pop3_tls()
    try:
        client.user(user)
        client.pass_(password)
    except poplib.error_proto as exc:
        return str(exc)
    finally:
        client.close()
    return "ok"


def submission_login(site: ClientSite, user: str, password: str) -> str:
    with site.submissions() as client:
        client.ehlo()
        client.user, client.password = user, password
        try:  # one attempt (smtplib's login() would try PLAIN, then LOGIN)
            client.auth("PLAIN", client.auth_plain)
        except smtplib.SMTPAuthenticationError as exc:
            return f"{exc.smtp_code} {exc.smtp_error.decode()}"
    return "ok"


def test_login_success_as_another_account_does_not_reset_failures(site: ClientSite) -> None:
    """36 wrong guesses for alice, with a correct login as bob after every 9, from one
    address: alice is locked after the 10th failure and her real password is then refused."""
    answers = []
    for n in range(36):
        if n and n % 9 == 0:
            assert imap_login(site, "bob", PASSWORD) == "ok"
        answers.append(imap_login(site, "alice", f"guess {n}"))
        if LOCKED in answers[-1]:
            break
    failed = [a for a in answers if "authentication failed" in a]
    assert len(failed) == MAX_FAILURES
    assert LOCKED in answers[-1]
    assert LOCKED in imap_login(site, "alice", "alice's real password")


@pytest.mark.parametrize("site", [3.0], indirect=True)  # failures answered after 3 s
@pytest.mark.parametrize(
    "login",
    [imap_login, pop3_login, submission_login],
    ids=["imaps-993", "pop3s-995", "submissions-465"],
)
def test_parallel_logins_are_held_to_the_failure_limit(
    site: ClientSite, login: Callable[[ClientSite, str, str], str]
) -> None:
    """19 wrong passwords at once from one address, then the right one: only MAX_FAILURES
    passwords are checked, every other attempt and the right password get the lock-out."""
    answers: dict[int, str] = {}
    start = threading.Barrier(19)

    def attempt(n: int, password: str, barrier: threading.Barrier | None) -> None:
        if barrier is not None:
            barrier.wait(30)
        answers[n] = login(site, "alice", password)

    threads = [threading.Thread(target=attempt, args=(n, f"guess {n}", start)) for n in range(19)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)  # the guesses are in their 3 s failure delay, holding their slots
    right = threading.Thread(target=attempt, args=(19, "alice's real password", None))
    right.start()
    for thread in [*threads, right]:
        thread.join(60)
    assert len(answers) == 20
    failed = [n for n, a in answers.items() if "authentication failed" in a]
    locked = [n for n, a in answers.items() if LOCKED in a]
    assert len(failed) == MAX_FAILURES, answers
    assert len(locked) == 20 - MAX_FAILURES, answers
    assert 19 in locked
