"""Idle connections from many client addresses do not lock a new sender out.

Acceptance item 5 of issue 16. A real `sitemail serve` with the default `[limits]` (20
connections per client address, 500 in all, stress timeout 10 s). The test opens 20 idle
connections from each of many loopback addresses (each reads the greeting and sits; when the
server closes it, it comes back after a pause: the pressure stays), then a sender from a new
address must be served: greeted and its message answered 250, within 5 s of its first try
(it may try again after a 421, as a client would). Bounded: a fixed number of connections,
each scenario ends after a few seconds. Figures printed: connections admitted and refused,
and the seconds the new sender took.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.support.processes import SITEMAIL, SMTP_ONLY, ServeProcess, configure, free_port

from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SITEMAIL.exists(), reason="console script not installed"),
]

HOST = "127.24.4.1"
SENDER = "127.24.5.1"  # the new client: an address that holds no connection
DOMAIN = "sitea.example.com"
PER_ADDRESS = 20
SERVED_WITHIN = 5.0  # seconds: the acceptance bound (a behaviour check, not a benchmark)
PAUSE = 0.5  # seconds an idle client waits before it connects again
GREETING_WAIT = 10.0  # seconds an idle client waits for its first reply


def make_site(data_dir: Path, port: int) -> None:
    service = AdminService.init(
        data_dir, org="ExchangeORG", site="SiteA", server="ServerA", domain=DOMAIN, listen=[HOST]
    )
    try:
        service.add_recipient(ObjectKind.MAILBOX, "alice", display_name="Alice")
    finally:
        service.close()
    configure(data_dir, {"smtp": f"port = {port}", **SMTP_ONLY})


@dataclass
class Pressure:
    """The idle clients' shared state: what they were answered, and when to stop."""

    target: int  # connections to open before the new sender tries
    seen: Counter[str] = field(default_factory=Counter)
    answered: asyncio.Event = field(default_factory=asyncio.Event)  # each had its first reply
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, what: str) -> None:
        self.seen[what] += 1
        if sum(self.seen.values()) >= self.target:
            self.answered.set()


async def idle_client(source: str, port: int, pressure: Pressure) -> None:
    """Connect, read the first reply, sit; connect again when closed, until told to stop."""
    while not pressure.stop.is_set():
        try:
            async with asyncio.timeout(GREETING_WAIT):
                reader, writer = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
                first = await reader.readline()
        except (OSError, TimeoutError):
            pressure.note("no reply")
            await asyncio.sleep(PAUSE)
            continue
        pressure.note("admitted" if first.startswith(b"220") else "refused")
        closed = asyncio.create_task(reader.read())  # once the server closes (421, timeout)
        stopping = asyncio.create_task(pressure.stop.wait())
        await asyncio.wait([closed, stopping], return_when=asyncio.FIRST_COMPLETED)
        for task in (closed, stopping):
            task.cancel()
        writer.close()
        await asyncio.sleep(PAUSE)


def send_as_new_client(port: int) -> float:
    """Seconds until a message from a new address is answered 250 (retrying after a 421)."""
    started = time.monotonic()
    while time.monotonic() - started < SERVED_WITHIN + 5:
        try:
            with smtplib.SMTP(HOST, port, source_address=(SENDER, 0), timeout=10) as client:
                client.sendmail(
                    "someone@outside.test",
                    [f"alice@{DOMAIN}"],
                    b"Subject: hello\r\n\r\nfrom a new client\r\n",
                )
            return time.monotonic() - started
        except (smtplib.SMTPException, OSError):
            time.sleep(0.25)
    return time.monotonic() - started


async def under_pressure(port: int, addresses: int) -> tuple[Counter[str], float]:
    """Idle connections from `addresses` addresses, then the new sender; what each saw."""
    pressure = Pressure(target=addresses * PER_ADDRESS)
    clients = [
        asyncio.create_task(idle_client(f"127.24.{6 + a // 250}.{1 + a % 250}", port, pressure))
        for a in range(addresses)
        for _ in range(PER_ADDRESS)
    ]
    try:
        async with asyncio.timeout(30):
            await pressure.answered.wait()
        await asyncio.sleep(3 * PAUSE)  # those refused or unanswered come back: a full house
        took = await asyncio.to_thread(send_as_new_client, port)
    finally:
        pressure.stop.set()
        await asyncio.wait(clients, timeout=GREETING_WAIT + PAUSE + 1)
        for client in clients:
            client.cancel()
    return pressure.seen, took


@pytest.mark.parametrize("addresses", [25, 100], ids=["25x20", "100x20"])
def test_idle_connections_do_not_lock_a_new_sender_out(tmp_path: Path, addresses: int) -> None:
    """Many idle connections from many addresses: a new sender is served within 5 s."""
    port = free_port(HOST)
    make_site(tmp_path / "SiteA", port)
    server = ServeProcess(tmp_path / "SiteA", tmp_path)
    try:
        server.start()
        seen, took = asyncio.run(under_pressure(port, addresses))
        code = server.stop()
    finally:
        server.cleanup()
    print(
        f"{addresses} addresses x {PER_ADDRESS} idle connections: {dict(seen)}; "
        f"the new sender was served in {took:.2f} s"
    )
    assert seen["admitted"] >= 400, f"too little pressure to mean anything: {dict(seen)}"
    assert took < SERVED_WITHIN, f"new sender shut out for {took:.1f} s: {dict(seen)}"
    assert code == 0
    assert not server.problems(), "\n".join(server.problems())
