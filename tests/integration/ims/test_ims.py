"""The Internet Mail Service end to end: a real `SiteServer` on loopback, real SMTP peers.

Each test runs one server in its own event loop with a ManualClock, talks to it with smtplib
over a socket, and lets it deliver to a mailbox or to an aiosmtpd sink on another loopback
address. Time-dependent behaviour (retries, delay notices, expiry) is driven by advancing the
clock and running a queue pass, so 48 hours take milliseconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import smtplib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as AioSMTP  # noqa: N811 - the library's name
from tests.support.databases import new_database_url

from sitemail.admin.service import AdminService
from sitemail.config import load_config
from sitemail.core.clock import ManualClock
from sitemail.directory import ObjectKind
from sitemail.lab.dns_server import EmbeddedDnsServer
from sitemail.mailbox import list_messages
from sitemail.queue.admin import QueueAdmin
from sitemail.site import SiteServer

HOST = "127.0.0.81"
SINK = "127.0.0.82"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Sink:
    """An aiosmtpd peer answering per recipient: `replies[address] = "550 5.1.1 no"`."""

    port: int
    replies: dict[str, str] = field(default_factory=dict)
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        reply = self.replies.get(address.lower())
        if reply and not reply.startswith("2"):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 2.0.0 sunk"


@dataclass
class Lab:
    service: AdminService
    server: SiteServer
    clock: ManualClock
    sink: Sink
    port: int

    def send(self, sender: str, recipients: list[str], body: bytes) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP(HOST, self.port, local_hostname="client.test", timeout=10) as client:
            return client.sendmail(sender, recipients, body)

    def inbox(self, alias: str) -> list[bytes]:
        guid = self.service.directory.get(alias).guid
        with self.service.store.read() as conn:
            return [m.content for m in list_messages(conn, guid)]

    def queue(self) -> QueueAdmin:
        return self.service.queue

    async def queue_pass(self, advance: float = 0.0) -> None:
        self.clock.advance(advance)
        manager = self.server.components.manager if self.server.components else None
        assert manager is not None
        # The server's own queue loop may hold a message mid-delivery: wait until it is quiet.
        while await manager.run_once() or manager.busy:  # noqa: ASYNC110 - polls two sources
            await asyncio.sleep(0.005)


def message(subject: str, *, extra: str = "") -> bytes:
    return (
        f"From: a@outside.test\r\nTo: x\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\n"
        f"{extra}\r\nbody of {subject}\r\n"
    ).encode()


@asynccontextmanager
async def running_site(
    tmp_path: Path, *, dns: EmbeddedDnsServer | None = None, **smtp: Any
) -> AsyncIterator[Lab]:
    service = AdminService.init(
        tmp_path / "SiteA",
        org="ExchangeORG",
        site="SiteA",
        server="ServerA",
        domain="sitea.example.com",
        listen=[HOST],
        database_url=new_database_url(),
    )
    service.add_recipient(ObjectKind.MAILBOX, "jsmith", display_name="John Smith")
    service.add_recipient(ObjectKind.MAILBOX, "mjones", display_name="Mary Jones")
    sink = Sink(free_port(SINK))
    port = free_port(HOST)
    config = load_config(tmp_path / "SiteA")
    config = dataclasses.replace(
        config,
        smtp=dataclasses.replace(config.smtp, port=port, outbound_port=sink.port, **smtp),
        dns=dataclasses.replace(
            config.dns, nameservers=(f"{dns.address}:{dns.port}",) if dns else ()
        ),
        admin=dataclasses.replace(config.admin, port=0),  # the admin API has its own tests
    )
    clock = ManualClock()
    server = SiteServer(config, clock)
    loop = asyncio.get_running_loop()
    sink_server = await loop.create_server(
        lambda: AioSMTP(sink, hostname="sink.test", ident="sink"), SINK, sink.port
    )
    ready = asyncio.Event()
    task = asyncio.create_task(server.run(lambda _s: ready.set()))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield Lab(service, server, clock, sink, port)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sink_server.close()
        service.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


async def until(check: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll `check` (in a thread: it may touch the database) until true or fail."""
    deadline = asyncio.get_running_loop().time() + limit
    while not await asyncio.to_thread(check):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_ims_inbound_reaches_local_mailbox_with_trace_headers(tmp_path: Path) -> None:
    """Mail for a local user is delivered to INBOX with Return-Path, Delivered-To, Received."""

    async def scenario() -> None:
        async with running_site(tmp_path) as lab:
            refused = await asyncio.to_thread(
                lab.send, "a@outside.test", ["JSmith@SiteA.example.com"], message("m1")
            )
            assert refused == {}
            await until(lambda: len(lab.inbox("jsmith")) == 1)
            stored = lab.inbox("jsmith")[0]
            assert stored.startswith(
                b"Return-Path: <a@outside.test>\r\nDelivered-To: JSmith@sitea.example.com\r\n"
            )
            assert b"Received: from client.test" in stored
            assert stored.endswith(b"body of m1\r\n")
            events = [e.event for e in lab.queue().track("<m1@test>")]
            assert events == ["received", "delivered"]

    run(scenario)


def test_ims_refuses_relay_and_unknown_users_at_rcpt(tmp_path: Path) -> None:
    """No open relay (550 5.7.1) and no backscatter: unknown users get 550 5.1.1 at RCPT."""

    async def scenario() -> None:
        async with running_site(tmp_path) as lab:
            with pytest.raises(smtplib.SMTPRecipientsRefused) as relay:
                await asyncio.to_thread(
                    lab.send, "a@outside.test", ["victim@elsewhere.test"], message("r")
                )
            code, text = relay.value.recipients["victim@elsewhere.test"]
            assert (code, text[:5]) == (550, b"5.7.1")
            with pytest.raises(smtplib.SMTPRecipientsRefused) as unknown:
                await asyncio.to_thread(
                    lab.send, "a@outside.test", ["nobody@sitea.example.com"], message("u")
                )
            code, text = unknown.value.recipients["nobody@sitea.example.com"]
            assert (code, text[:5]) == (550, b"5.1.1")
            for trick in (
                '"victim@elsewhere.test"@sitea.example.com',
                "victim%elsewhere.test@sitea.example.com",
            ):
                with pytest.raises(smtplib.SMTPRecipientsRefused):
                    await asyncio.to_thread(lab.send, "a@outside.test", [trick], message("t"))
            assert lab.queue().entries() == []

    run(scenario)


def test_ims_domain_route_relays_and_bounces_only_the_refused_recipient(tmp_path: Path) -> None:
    """A domain route forwards to its host; a 5xx there ends in a DSN for that recipient only."""

    async def scenario() -> None:
        async with running_site(tmp_path) as lab:
            lab.service.add_domain_route("partner.test", f"{SINK}:{lab.sink.port}")
            lab.server.components.router.invalidate()  # type: ignore[union-attr]
            lab.sink.replies["gone@partner.test"] = "550 5.1.1 no such user"
            await asyncio.to_thread(
                lab.send,
                "jsmith@sitea.example.com",
                ["ok@partner.test", "gone@partner.test"],
                message("d1"),
            )
            await until(lambda: len(lab.sink.received) == 1 and len(lab.inbox("jsmith")) == 1)
            assert lab.sink.received[0][1] == ["ok@partner.test"]
            dsn = email.message_from_bytes(lab.inbox("jsmith")[0], policy=email.policy.default)
            assert dsn.get_content_type() == "multipart/report"
            status = dsn.get_payload()[1].as_string()
            assert "Final-Recipient: rfc822; gone@partner.test" in status
            assert "Status: 5.1.1" in status
            assert "ok@partner.test" not in status
            await until(lambda: lab.queue().entries() == [])  # closing follows delivery

    run(scenario)


def test_ims_retries_then_delay_notice_then_expiry_dsn(tmp_path: Path) -> None:
    """4xx is retried on the schedule; a delay notice after 4 h; a 4.4.7 failure DSN at 48 h."""

    async def scenario() -> None:
        async with running_site(tmp_path) as lab:
            lab.service.add_domain_route("partner.test", f"{SINK}:{lab.sink.port}")
            lab.server.components.router.invalidate()  # type: ignore[union-attr]
            lab.sink.replies["busy@partner.test"] = "451 4.3.0 try later"
            await asyncio.to_thread(
                lab.send, "jsmith@sitea.example.com", ["busy@partner.test"], message("r1")
            )
            await until(
                lambda: any(r.attempts for e in lab.queue().entries() for r in e.recipients)
            )
            first = lab.queue().entries()[0].recipients[0]
            assert first.state == "queued"
            assert first.last_status == "4.3.0"
            assert first.next_attempt_at == pytest.approx(lab.clock.now() + 300)
            await lab.queue_pass(advance=299)
            assert lab.queue().entries()[0].recipients[0].attempts == 1  # not due yet
            await lab.queue_pass(advance=1)
            assert lab.queue().entries()[0].recipients[0].attempts == 2
            for _ in range(6):  # doubling, capped at 1 h
                await lab.queue_pass(advance=3600)
            await lab.queue_pass(advance=3600)
            notices = [
                email.message_from_bytes(m, policy=email.policy.default)
                for m in lab.inbox("jsmith")
            ]
            assert [n["Subject"] for n in notices] == ["Delayed Mail (still being retried)"]
            await lab.queue_pass(advance=48 * 3600)
            notices = [
                email.message_from_bytes(m, policy=email.policy.default)
                for m in lab.inbox("jsmith")
            ]
            assert len(notices) == 2
            status = notices[1].get_payload()[1].as_string()
            assert "Action: failed" in status
            assert "Status: 4.4.7" in status
            await until(lambda: lab.queue().entries() == [])
            events = [e.event for e in lab.queue().track("<r1@test>")]
            assert events[0] == "received"
            assert "deferred" in events
            assert "expired" in events

    run(scenario)


def test_ims_mx_delivery_through_loopback_dns(tmp_path: Path) -> None:
    """A trusted client's mail for an outside domain goes to the MX host found in DNS."""

    async def scenario() -> None:
        with EmbeddedDnsServer("127.0.0.1", 0, zones=["outside.test"]) as dns:
            dns.add("outside.test", "MX", "10 mx.outside.test.")
            dns.add("mx.outside.test", "A", SINK)
            async with running_site(tmp_path, dns=dns, trusted_networks=("127.0.0.0/8",)) as lab:
                await asyncio.to_thread(
                    lab.send, "jsmith@sitea.example.com", ["friend@outside.test"], message("x1")
                )
                await until(lambda: len(lab.sink.received) == 1)
                assert lab.sink.received[0][1] == ["friend@outside.test"]
                await until(lambda: lab.queue().entries() == [])
                assert "relayed" in [e.event for e in lab.queue().track("<x1@test>")]

    run(scenario)


def test_ims_hop_limit_bounces_with_5_4_6(tmp_path: Path) -> None:
    """More than 50 Received headers is a loop: failure DSN with status 5.4.6."""

    async def scenario() -> None:
        async with running_site(tmp_path) as lab:
            hops = "".join(
                f"Received: from hop{i}.test by hop{i + 1}.test; date\r\n" for i in range(50)
            )
            await asyncio.to_thread(
                lab.send,
                "mjones@sitea.example.com",
                ["jsmith@sitea.example.com"],
                message("l1", extra=hops),
            )
            await until(lambda: len(lab.inbox("mjones")) == 1)
            assert lab.inbox("jsmith") == []
            assert b"Status: 5.4.6" in lab.inbox("mjones")[0]

    run(scenario)


def test_ims_group_expands_and_contact_forwards(tmp_path: Path) -> None:
    """A group delivers to each member once; a contact forwards to its external target."""

    async def scenario() -> None:
        async with running_site(tmp_path) as lab:
            lab.service.add_domain_route("partner.test", f"{SINK}:{lab.sink.port}")
            lab.service.add_recipient(
                ObjectKind.CONTACT, "partner", display_name="P", target="p@partner.test"
            )
            lab.service.add_recipient(
                ObjectKind.GROUP,
                "team",
                display_name="Team",
                members=["jsmith", "mjones", "partner"],
            )
            lab.server.components.router.invalidate()  # type: ignore[union-attr]
            await asyncio.to_thread(
                lab.send,
                "a@outside.test",
                ["team@sitea.example.com", "jsmith@sitea.example.com"],
                message("g1"),
            )
            await until(lambda: len(lab.sink.received) == 1 and len(lab.inbox("mjones")) == 1)
            assert len(lab.inbox("jsmith")) == 1  # listed twice, delivered once
            assert lab.sink.received[0][1] == ["p@partner.test"]

    run(scenario)
