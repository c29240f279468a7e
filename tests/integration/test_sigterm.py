"""SIGTERM during a burst: a real `sitemail serve` stops cleanly, and nothing is lost or doubled.

Acceptance item 4 of issue 16. Several SMTP clients (threads) send messages with unique
Message-IDs while the server gets SIGTERM at seeded random points, several rounds, each
followed by a restart. Checked, round by round and at the end:
- the process exits 0 within `[server] shutdown_timeout`, and no log holds a traceback or
  an ERROR line;
- every message answered 250 is delivered exactly once (mailbox, or the next hop: Postfix's
  smtp-sink behind a domain route, in the relay variant) or still queued;
- a message answered 4xx/5xx (the 421 of a stopping server among them) is nowhere: the
  client keeps it and sends it again, so a stored copy would be a duplicate;
- a message whose DATA got no reply at all is delivered at most once.
Bounded in rounds and time; the randomness is seeded (SITEMAIL_STOP_SEED=n for another run).
"""

from __future__ import annotations

import os
import random
import re
import smtplib
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.ledger import Ledger, Outcome, connect, say_goodbye
from tests.support.processes import (
    SITEMAIL,
    SMTP_ONLY,
    SMTP_SINK,
    ServeProcess,
    configure,
    free_port,
    postfix_sink,
    wait_until,
)

from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind
from sitemail.mailbox import list_messages

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SITEMAIL.exists(), reason="console script not installed"),
]

HOST = "127.24.0.1"
SINK_HOST = "127.24.0.2"
DOMAIN = "sitea.example.com"
SINK_DOMAIN = "sink.test"
SEED = int(os.environ.get("SITEMAIL_STOP_SEED", "20261207"))
ROUNDS = 5
CLIENTS = 6
MAILBOXES = ("alice", "bob", "carol")
SHUTDOWN_TIMEOUT = 10.0  # [server] shutdown_timeout of the site under test
DRAIN_TIMEOUT = 40.0
ROUND_TIMEOUT = 8.0  # the most a round waits for its burst to build up
_QUEUED_AS = re.compile(rb"queued as (\S+)")
_MESSAGE_ID = re.compile(r"^Message-ID: <([^>]+)@stop\.test>", re.MULTILINE | re.IGNORECASE)


@dataclass
class Attempt:
    message_id: str
    recipient: str
    content: bytes
    outcome: Outcome = Outcome.UNSENT
    reply: str = ""


def send_one(client: smtplib.SMTP, attempt: Attempt) -> bool:
    """One transaction; records its outcome. False when the connection is to be dropped."""
    try:
        code, text = client.mail("load@outside.test")
        if code == 250:
            code, text = client.rcpt(attempt.recipient)
        if code != 250:
            attempt.reply = f"{code} {text!r}"
            return False
        code, reply = client.data(attempt.content)
    except smtplib.SMTPDataError as exc:  # DATA or the end of data answered 4xx/5xx
        attempt.outcome = Outcome.REFUSED
        attempt.reply = f"{exc.smtp_code} {exc.smtp_error!r}"
        return False
    except (smtplib.SMTPException, OSError) as exc:  # no reply: sent or not, we cannot know
        attempt.outcome = Outcome.UNKNOWN
        attempt.reply = repr(exc)
        return False
    attempt.reply = f"{code} {reply.decode(errors='replace')}"
    attempt.outcome = Outcome.ACKED if _QUEUED_AS.search(reply) else Outcome.REFUSED
    return True


def client_loop(
    number: int, port: int, stop: threading.Event, ledger: Ledger[Attempt], to: str
) -> None:
    """Send until `stop`, reconnecting while the server is down."""
    rng = random.Random(SEED * 100 + number)
    client: smtplib.SMTP | None = None
    seq = 0
    while not stop.is_set():
        if client is None:
            client = connect(HOST, port)
            if client is None:  # stopped: being restarted
                continue
        seq += 1
        message_id = f"c{number}-{seq}"
        recipient = to.format(mailbox=rng.choice(MAILBOXES))
        body = "".join(f"line {n} of {message_id}\r\n" for n in range(rng.choice((5, 50, 800))))
        content = (
            f"From: load@outside.test\r\nTo: {recipient}\r\nSubject: stop test\r\n"
            f"Message-ID: <{message_id}@stop.test>\r\n\r\n{body}"
        ).encode()
        attempt = Attempt(message_id, recipient, content)
        ledger.add(attempt)
        if not send_one(client, attempt):
            client.close()
            client = None
    say_goodbye(client)


def terminate(server: ServeProcess) -> tuple[int, float]:
    """SIGTERM; the exit status and the seconds it took."""
    started = time.monotonic()
    code = server.stop(limit=SHUTDOWN_TIMEOUT + 10)
    return code, time.monotonic() - started


def make_site(
    data_dir: Path, port: int, sink_port: int | None, shutdown_timeout: float = SHUTDOWN_TIMEOUT
) -> None:
    service = AdminService.init(
        data_dir, org="ExchangeORG", site="SiteA", server="ServerA", domain=DOMAIN, listen=[HOST]
    )
    try:
        for alias in MAILBOXES:
            service.add_recipient(ObjectKind.MAILBOX, alias, display_name=alias.title())
        if sink_port is not None:
            service.add_domain_route(SINK_DOMAIN, f"{SINK_HOST}:{sink_port}")
    finally:
        service.close()
    configure(
        data_dir,
        {
            "server": f"shutdown_timeout = {shutdown_timeout}",
            "smtp": f"port = {port}",
            "queue": "retry_initial = 1\nretry_max = 2",
            **SMTP_ONLY,
        },
    )


def queued(data_dir: Path) -> int:
    service = AdminService.open(data_dir)
    try:
        return sum(1 for e in service.queue.entries() for r in e.recipients if r.state == "queued")
    finally:
        service.close()


def delivered_locally(data_dir: Path) -> Counter[str]:
    """Message-ID (without its domain) -> copies, over every mailbox."""
    copies: Counter[str] = Counter()
    service = AdminService.open(data_dir)
    try:
        for alias in MAILBOXES:
            with service.store.read() as conn:
                stored = list_messages(conn, service.get_recipient(alias).guid)
            copies.update(m.message_id.strip("<>").removesuffix("@stop.test") for m in stored)
    finally:
        service.close()
    return copies


def run_rounds(tmp_path: Path, to: str, sink: Path | None, sink_port: int | None) -> None:
    rng = random.Random(SEED)
    data_dir = tmp_path / "SiteA"
    port = free_port(HOST)
    make_site(data_dir, port, sink_port)
    server = ServeProcess(data_dir, tmp_path)
    ledger: Ledger[Attempt] = Ledger()
    stop = threading.Event()
    clients = [
        threading.Thread(
            target=client_loop, args=(n, port, stop, ledger, to), name=f"burst-{n}", daemon=True
        )
        for n in range(CLIENTS)
    ]
    exits: list[tuple[int, float]] = []
    try:
        server.start()
        for thread in clients:
            thread.start()
        for _ in range(ROUNDS):
            target = ledger.count(Outcome.ACKED) + rng.randint(20, 120)
            deadline = time.monotonic() + ROUND_TIMEOUT
            while ledger.count(Outcome.ACKED) < target and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.03))
            exits.append(terminate(server))
            time.sleep(rng.uniform(0, 0.3))  # clients meet a closed port for a while
            server.start()
        stop.set()
        for thread in clients:
            thread.join(timeout=20)
            assert not thread.is_alive(), f"{thread.name} did not stop"
        wait_until(lambda: queued(data_dir) == 0, DRAIN_TIMEOUT, "queue drained")
        exits.append(terminate(server))
    finally:
        stop.set()
        server.cleanup()

    if sink is None:
        copies = delivered_locally(data_dir)
    else:
        wait_until(sink.exists, 5, "sink dump")
        copies = Counter(_MESSAGE_ID.findall(sink.read_text(errors="replace")))
    by_outcome = Counter(a.outcome for a in ledger.attempts)
    refusals = Counter(a.reply[:3] for a in ledger.attempts if a.outcome is Outcome.REFUSED)
    summary = (
        f"seed {SEED}: {ROUNDS} SIGTERMs, {len(ledger.attempts)} attempts {dict(by_outcome)}, "
        f"refusals {dict(refusals)}, exits (status, seconds) "
        f"{[(c, round(s, 2)) for c, s in exits]}"
    )
    print(summary)
    lost = [
        a.message_id
        for a in ledger.attempts
        if a.outcome is Outcome.ACKED and not copies[a.message_id]
    ]
    doubled = [f"{m} x{n}" for m, n in copies.items() if n > 1]
    stored_though_refused = [
        f"{a.message_id} ({a.reply})"
        for a in ledger.attempts
        if a.outcome in {Outcome.REFUSED, Outcome.UNSENT} and copies[a.message_id]
    ]
    assert by_outcome[Outcome.ACKED] >= ROUNDS * 20, f"too little load to mean anything: {summary}"
    assert all(code == 0 for code, _ in exits), f"exit status not 0: {summary}"
    assert all(s < SHUTDOWN_TIMEOUT + 3 for _, s in exits), f"slow stop: {summary}"
    assert not lost, f"LOST after 250 ({summary}): {lost}"
    assert not doubled, f"DUPLICATED ({summary}): {doubled}"
    assert not stored_though_refused, f"stored though refused ({summary}): {stored_though_refused}"
    assert not server.problems(), "errors in the server logs:\n" + "\n".join(server.problems())


def test_sigterm_during_burst_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """SIGTERM mid-burst, five times: exit 0, every 250 delivered once, every 4xx nowhere."""
    run_rounds(tmp_path, f"{{mailbox}}@{DOMAIN}", None, None)


@pytest.mark.skipif(SMTP_SINK is None, reason="Postfix's smtp-sink not installed")
def test_sigterm_while_relaying_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """SIGTERM while relaying a burst to the next hop: each 250 reaches it exactly once."""
    # -w 1: the sink waits a second before answering DATA, so SIGTERM finds relays in flight.
    with postfix_sink(tmp_path, SINK_HOST, "-w", "1") as (sink_port, dump):
        run_rounds(tmp_path, f"{{mailbox}}@{SINK_DOMAIN}", dump, sink_port)


@pytest.mark.skipif(SMTP_SINK is None, reason="Postfix's smtp-sink not installed")
def test_sigterm_cuts_off_a_stalled_relay_at_the_timeout_and_keeps_it_queued(
    tmp_path: Path,
) -> None:
    """A next hop that does not answer DATA: SIGTERM still exits 0 by the shutdown timeout,
    without a traceback, and the message stays queued for the next start."""
    port = free_port(HOST)
    data_dir = tmp_path / "SiteA"
    with postfix_sink(tmp_path, SINK_HOST, "-w", "60") as (sink_port, _):
        make_site(data_dir, port, sink_port, shutdown_timeout=3)
        server = ServeProcess(data_dir, tmp_path)
        try:
            server.start()
            with smtplib.SMTP(HOST, port, timeout=10) as client:
                client.sendmail(
                    "load@outside.test", [f"alice@{SINK_DOMAIN}"], b"Subject: stalled\r\n\r\nx\r\n"
                )
            time.sleep(1.0)  # the relay is waiting for the sink's reply to DATA
            code, seconds = terminate(server)
        finally:
            server.cleanup()
    assert code == 0
    assert seconds < 3 + 2.5, f"stopped in {seconds:.1f} s"
    assert queued(data_dir) == 1
    assert not server.problems(), "\n".join(server.problems())
