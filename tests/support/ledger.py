"""What load-test clients were told about each message they sent, for the audit after a run
(crash and stop tests: a 250 must be delivered once, a 4xx/5xx nowhere)."""

from __future__ import annotations

import smtplib
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, Protocol, TypeVar


class Outcome(StrEnum):
    ACKED = "acked"  # 250 after DATA: must be delivered exactly once (or still be queued)
    UNKNOWN = "unknown"  # connection lost after DATA began: at most once, all or nothing
    REFUSED = "refused"  # 4xx/5xx after DATA: must be nowhere
    UNSENT = "unsent"  # failed before DATA: must be nowhere


class Attempted(Protocol):
    outcome: Outcome


A = TypeVar("A", bound=Attempted)


@dataclass
class Ledger(Generic[A]):
    """Every attempt of every client thread."""

    attempts: list[A] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, attempt: A) -> None:
        with self.lock:
            self.attempts.append(attempt)

    def count(self, outcome: Outcome) -> int:
        with self.lock:
            return sum(1 for a in self.attempts if a.outcome is outcome)


def connect(host: str, port: int, timeout: float = 15) -> smtplib.SMTP | None:
    """A load client's connection, greeted and past EHLO; None while the server is down
    (after a short pause, so a loop of retries does not spin)."""
    client = smtplib.SMTP(local_hostname="load.test", timeout=timeout)
    try:
        client.connect(host, port)
        client.ehlo()
    except (smtplib.SMTPException, OSError):
        client.close()
        time.sleep(0.05)
        return None
    return client


def say_goodbye(client: smtplib.SMTP | None) -> None:
    """QUIT if the connection still works, else just close it."""
    if client is None:
        return
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()
