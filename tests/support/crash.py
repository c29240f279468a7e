"""The kill -9 harness: `sitemail serve` as processes to kill and start again, and a load of
SMTP clients that keeps a ledger of what each message was told.

`ServeProcess`: every incarnation logs to its own file (`serve-<name>-<n>.log`); `problems`
collects the error lines and tracebacks of all of them. The process runs this interpreter's
`sitemail.main` (tests/support/serve.py), so no console script is needed.

`client_loop`: one client thread sending messages with unique Message-IDs (`<prefix>c<n>-
<seq>@crash.test`, the body's SHA-256 in a header) until told to stop, reconnecting while the
server is down, and writing each outcome in the `Ledger`: acknowledged (250 "queued as"),
unknown (the connection died after DATA began), refused, or unsent.
"""

from __future__ import annotations

import hashlib
import random
import re
import smtplib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from tests.support.processes import ServeProcess

from sitemail.admin.service import AdminService

_QUEUED_AS = re.compile(rb"queued as (\S+)")


class Outcome(StrEnum):
    ACKED = "acked"  # 250 after DATA: must be delivered exactly once (or still be queued)
    UNKNOWN = "unknown"  # connection lost after DATA began: at most once, all or nothing
    REFUSED = "refused"  # 4xx/5xx after DATA: must be nowhere
    UNSENT = "unsent"  # failed before DATA: must be nowhere


@dataclass
class Attempt:
    message_id: str
    recipients: tuple[str, ...]  # envelope addresses
    mailboxes: frozenset[str]  # where it must end up (groups expanded)
    content: bytes
    outcome: Outcome = Outcome.UNSENT
    queue_id: str = ""
    reply: str = ""


@dataclass
class Ledger:
    attempts: list[Attempt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, attempt: Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)

    def count(self, outcome: Outcome) -> int:
        with self.lock:
            return sum(1 for a in self.attempts if a.outcome is outcome)


def make_message(rng: random.Random, message_id: str, to: str) -> bytes:
    """Headers and a body of 1 to ~60 KB whose SHA-256 is in a header (some lines start
    with a dot, to go through dot-stuffing)."""
    lines = []
    for _ in range(rng.choice((3, 20, 200, 900))):
        width = rng.randint(0, 70)
        lead = "." if rng.random() < 0.05 else ""
        lines.append(lead + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789 ", k=width)))
    body = ("\r\n".join(lines) + "\r\n").encode()
    digest = hashlib.sha256(body).hexdigest()
    head = (
        f"From: load@outside.test\r\nTo: {to}\r\nSubject: crash test {message_id}\r\n"
        f"Message-ID: <{message_id}@crash.test>\r\nX-Body-SHA256: {digest}\r\n\r\n"
    )
    return head.encode() + body


@dataclass(frozen=True)
class Load:
    """What the clients share: where to send, when to stop, the ledger, the seed, how to
    choose the recipients ((envelope addresses, mailboxes)), a Message-ID prefix, a pause."""

    host: str
    port: int
    stop: threading.Event
    ledger: Ledger
    seed: int
    choose: Callable[[random.Random], tuple[tuple[str, ...], frozenset[str]]]
    prefix: str = ""
    pause: float = 0.0  # seconds between two messages of a client (a lighter load)


def client_loop(load: Load, number: int) -> None:
    """Send messages until `stop`, reconnecting while the server is down; record outcomes."""
    rng = random.Random(load.seed * 100 + number)
    client: smtplib.SMTP | None = None
    seq = 0
    ledger = load.ledger
    while not load.stop.is_set():
        if client is None:
            client = smtplib.SMTP(local_hostname="load.test", timeout=10)
            try:
                client.connect(load.host, load.port)
                client.ehlo()
            except (smtplib.SMTPException, OSError):
                client.close()
                client = None
                time.sleep(0.05)  # the server is being restarted
                continue
        if seq and load.pause:
            time.sleep(load.pause)
        seq += 1
        message_id = f"{load.prefix}c{number}-{seq}"
        recipients, mailboxes = load.choose(rng)
        attempt = Attempt(
            message_id, recipients, mailboxes, make_message(rng, message_id, recipients[0])
        )
        ledger.add(attempt)
        try:
            code, text = client.mail("load@outside.test")
            if code != 250:
                raise smtplib.SMTPResponseException(code, text)
            for rcpt in recipients:
                code, text = client.rcpt(rcpt)
                if code != 250:
                    raise smtplib.SMTPResponseException(code, text)
        except (smtplib.SMTPException, OSError) as exc:
            attempt.reply = repr(exc)
            client.close()
            client = None
            continue
        try:
            code, reply = client.data(attempt.content)
        except smtplib.SMTPDataError as exc:  # DATA itself refused: content never sent
            attempt.reply = f"{exc.smtp_code} {exc.smtp_error!r}"
            client.close()
            client = None
            continue
        except (smtplib.SMTPException, OSError) as exc:
            attempt.outcome = Outcome.UNKNOWN
            attempt.reply = repr(exc)
            client.close()
            client = None
            continue
        attempt.reply = f"{code} {reply.decode(errors='replace')}"
        match = _QUEUED_AS.search(reply)
        if code == 250 and match is not None:
            attempt.queue_id = match.group(1).decode()
            attempt.outcome = Outcome.ACKED
        else:
            attempt.outcome = Outcome.REFUSED
    if client is not None:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def only_smtp(data_dir: Path, port: int) -> None:
    """Set a data dir's server to SMTP on `port` alone (no client access, no admin API), and
    retry deferred mail within seconds (another site or a peer is down), not minutes."""
    config = data_dir / "sitemail.toml"
    text = config.read_text(encoding="utf-8")
    for section, lines in (
        ("smtp", f"port = {port}"),
        ("queue", "retry_initial = 1\nretry_max = 2"),
        ("imap", "port = 0\ntls_port = 0"),
        ("pop3", "port = 0\ntls_port = 0"),
        ("submission", "port = 0\ntls_port = 0"),
        ("admin", "port = 0"),
    ):
        text = text.replace(f"[{section}]\n", f"[{section}]\n{lines}\n", 1)
    config.write_text(text, encoding="utf-8")


def queued_count(data_dir: Path) -> int:
    """How many recipients the data dir's queue still holds (read while the server runs)."""
    service = AdminService.open(data_dir)
    try:
        return sum(1 for e in service.queue.entries() for r in e.recipients if r.state == "queued")
    finally:
        service.close()


def kill_at_random_points(
    victim: ServeProcess,
    ledger: Ledger,
    rng: random.Random,
    *,
    kills: int,
    acks: tuple[int, int],
    down: float,
    after_kill: Callable[[], object] = lambda: None,
) -> None:
    """Kill `victim` `kills` times under the load, each time after a random number of new
    acknowledgements in `acks` (waiting 8 s at most), and start it again after up to `down`
    seconds (clients meet a closed port meanwhile)."""
    for _ in range(kills):
        target = ledger.count(Outcome.ACKED) + rng.randint(*acks)
        deadline = time.monotonic() + 8
        while ledger.count(Outcome.ACKED) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        victim.kill()
        after_kill()
        time.sleep(rng.uniform(0, down))
        victim.start()
