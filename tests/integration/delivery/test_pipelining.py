"""Outbound ESMTP PIPELINING (RFC 2920) against a real aiosmtpd peer on loopback.

The peer (127.10.66.2, and 127.10.66.3 under uvloop) offers PIPELINING or not, answers MAIL,
each RCPT, the DATA command and the end of DATA as each test says, records what it received,
and notes what the client had already sent when it handled MAIL: with pipelining the RCPTs and
DATA are already waiting in its buffer (one write), without it nothing is. Every result is
checked per recipient: 2xx delivered, 4xx deferred, 5xx failed, each with the reply behind it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiosmtpd import smtp as aiosmtpd_smtp

from sitemail.admin.tls import make_self_signed
from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.delivery.remote import RemoteDelivery
from sitemail.queue.content import Content
from sitemail.queue.model import Outcome, QueuedMessage, QueuedRecipient, QueueId, RecipientResult
from sitemail.routing.resolver import NoDnsResolver
from sitemail.routing.route import Route, Transport

PEER_HOST = "127.10.66.2"
UVLOOP_PEER_HOST = "127.10.66.3"
HELO = "servera.sitea.test"
CONTENT = b"Subject: pipelined\r\nMessage-ID: <p1@sitea.test>\r\n\r\nHello.\r\n.dot line\r\n"
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(20):
            return await coro

    return asyncio.run(bounded())


# -- the peer -----------------------------------------------------------------------------------


class PeerSession(aiosmtpd_smtp.SMTP):  # type: ignore[misc,unused-ignore]  # aiosmtpd is untyped
    """aiosmtpd's session, noting what was buffered at MAIL, counting RSETs, and refusing the
    DATA command itself when told to (aiosmtpd has no hook before its 354)."""

    def __init__(self, peer: Peer, **kwargs: Any) -> None:
        super().__init__(peer, **kwargs)
        self.peer = peer

    @aiosmtpd_smtp.syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str) -> None:
        self.peer.buffered_at_mail.append(bytes(self._reader._buffer))
        await super().smtp_MAIL(arg)

    @aiosmtpd_smtp.syntax("RSET")
    async def smtp_RSET(self, arg: str) -> None:
        self.peer.rsets += 1
        await super().smtp_RSET(arg)

    @aiosmtpd_smtp.syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if self.peer.data_command_reply and self.envelope.rcpt_tos:
            await self.push(self.peer.data_command_reply)
            return
        await super().smtp_DATA(arg)


@dataclass
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


@dataclass
class Peer:
    """An aiosmtpd peer whose answers the test chooses (per recipient, MAIL, DATA, end)."""

    host: str = PEER_HOST
    pipelining: bool = True
    tls_context: ssl.SSLContext | None = None
    mail_reply: str = ""
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    max_rcpts: int = 0  # 0: no limit; else 452 4.5.3 beyond it
    data_command_reply: str = ""
    data_reply: str = ""
    port: int = 0
    connections: int = 0
    rsets: int = 0
    buffered_at_mail: list[bytes] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)
    sessions: list[PeerSession] = field(default_factory=list)
    server: asyncio.Server | None = None

    def _session(self) -> PeerSession:
        self.connections += 1
        session = PeerSession(
            self,
            hostname="peer.remote.test",
            tls_context=self.tls_context,
            loop=asyncio.get_running_loop(),
            timeout=10,
        )
        self.sessions.append(session)
        return session

    async def start(self) -> Peer:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._session, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def drop_connections(self) -> None:
        """Close every session from the server side (an idle timeout, a restart)."""
        for session in self.sessions:
            if session.transport is not None:
                session.transport.close()

    @property
    def nexthop(self) -> str:
        return f"{self.host}:{self.port}"

    # aiosmtpd handler hooks

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        responses.insert(-1, "250-ENHANCEDSTATUSCODES")
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        if self.max_rcpts and len(envelope.rcpt_tos) >= self.max_rcpts:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply:
            return self.data_reply
        self.delivered.append(
            Delivered(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return f"250 2.0.0 Ok: queued as P{len(self.delivered)}"


@asynccontextmanager
async def connected(peer: Peer) -> AsyncIterator[RemoteDelivery]:
    """The peer running, and a transport that relays to it."""
    await peer.start()
    delivery = RemoteDelivery(
        NoDnsResolver(),
        helo_name=HELO,
        connect_timeout=2.0,
        command_timeout=5.0,
        data_timeout=5.0,
    )
    try:
        yield delivery
    finally:
        await delivery.aclose()
        await asyncio.sleep(0.05)  # let the peer see the QUIT before it closes
        await peer.stop()


def message(*addresses: str, sender: str = "alice@sitea.test") -> QueuedMessage:
    envelope = Envelope(sender=sender, recipients=tuple(EnvelopeRecipient(a) for a in addresses))
    return QueuedMessage(QueueId("Q1"), envelope, 0.0, len(CONTENT), "<p1@sitea.test>", False)


async def deliver(delivery: RemoteDelivery, peer: Peer, *addresses: str) -> list[RecipientResult]:
    msg = message(*addresses)
    work = [
        (
            QueuedRecipient(i + 1, msg.queue_id, rcpt, 0, None, False),
            Route(Transport.RELAY, peer.nexthop, rcpt.address),
        )
        for i, rcpt in enumerate(msg.envelope.recipients)
    ]
    return await delivery.deliver(msg, Content.of(CONTENT), work)


def outcomes(results: list[RecipientResult]) -> list[tuple[Outcome, int, str]]:
    return [(r.outcome, r.code, r.status) for r in results]


def pipelined(buffered: bytes) -> bool:
    """Whether the RCPTs and DATA had arrived before the peer handled MAIL: one write."""
    return b"RCPT TO:" in buffered and buffered.endswith(b"DATA\r\n")


# -- the tests ----------------------------------------------------------------------------------


def test_envelope_goes_in_one_write_and_every_recipient_is_delivered() -> None:
    async def scenario() -> tuple[Peer, list[RecipientResult]]:
        peer = Peer()
        async with connected(peer) as delivery:
            results = await deliver(delivery, peer, "a@remote.test", "b@remote.test")
        return peer, results

    peer, results = run(scenario())
    assert outcomes(results) == [(Outcome.DELIVERED, 250, "2.0.0")] * 2
    assert "in reply to end of DATA command" in results[0].text
    assert [pipelined(b) for b in peer.buffered_at_mail] == [True]
    (delivered,) = peer.delivered
    assert delivered.rcpt_tos == ["a@remote.test", "b@remote.test"]
    assert delivered.content.endswith(b"Hello.\r\n.dot line\r\n")  # dot-stuffed, then unstuffed


def test_some_recipients_refused_each_gets_its_own_reply() -> None:
    async def scenario() -> tuple[Peer, list[RecipientResult]]:
        peer = Peer(
            rcpt_replies={
                "b@remote.test": "550 5.1.1 <b@remote.test>: no such user",
                "c@remote.test": "451 4.2.0 mailbox busy",
            }
        )
        async with connected(peer) as delivery:
            results = await deliver(
                delivery, peer, "a@remote.test", "b@remote.test", "c@remote.test", "d@remote.test"
            )
        return peer, results

    peer, results = run(scenario())
    assert outcomes(results) == [
        (Outcome.DELIVERED, 250, "2.0.0"),
        (Outcome.FAILED, 550, "5.1.1"),
        (Outcome.DEFERRED, 451, "4.2.0"),
        (Outcome.DELIVERED, 250, "2.0.0"),
    ]
    assert results[1].text == "<b@remote.test>: no such user (in reply to RCPT TO command)"
    assert results[1].remote_mta == PEER_HOST
    assert [d.rcpt_tos for d in peer.delivered] == [["a@remote.test", "d@remote.test"]]


def test_every_recipient_refused_sends_no_message_and_the_connection_stays_usable() -> None:
    async def scenario() -> tuple[Peer, list[RecipientResult], list[RecipientResult]]:
        peer = Peer(rcpt_replies={"x@remote.test": "550 5.1.1 no such user"})
        async with connected(peer) as delivery:
            refused = await deliver(delivery, peer, "x@remote.test")
            later = await deliver(delivery, peer, "a@remote.test")
        return peer, refused, later

    peer, refused, later = run(scenario())
    assert outcomes(refused) == [(Outcome.FAILED, 550, "5.1.1")]
    assert outcomes(later) == [(Outcome.DELIVERED, 250, "2.0.0")]
    assert [d.rcpt_tos for d in peer.delivered] == [["a@remote.test"]]
    assert peer.connections == 1
    assert peer.rsets == 1  # the second group began with RSET (RFC 2920 allows it there)
    assert [pipelined(b) for b in peer.buffered_at_mail] == [True, True]


def test_refused_sender_settles_every_recipient_with_the_mail_reply() -> None:
    async def scenario() -> tuple[Peer, list[RecipientResult]]:
        peer = Peer(mail_reply="550 5.7.1 sender not allowed")
        async with connected(peer) as delivery:
            results = await deliver(delivery, peer, "a@remote.test", "b@remote.test")
            peer.mail_reply = ""
            results += await deliver(delivery, peer, "c@remote.test")  # same connection, reset
        return peer, results

    peer, results = run(scenario())
    assert outcomes(results) == [
        (Outcome.FAILED, 550, "5.7.1"),
        (Outcome.FAILED, 550, "5.7.1"),
        (Outcome.DELIVERED, 250, "2.0.0"),
    ]
    assert results[0].text == "sender not allowed (in reply to MAIL FROM command)"
    assert [d.rcpt_tos for d in peer.delivered] == [["c@remote.test"]]
    assert peer.connections == 1


def test_temporary_sender_refusal_defers() -> None:
    async def scenario() -> list[RecipientResult]:
        peer = Peer(mail_reply="451 4.3.0 try again later")
        async with connected(peer) as delivery:
            return await deliver(delivery, peer, "a@remote.test")

    assert outcomes(run(scenario())) == [(Outcome.DEFERRED, 451, "4.3.0")]


def test_data_command_refused_settles_the_accepted_recipients() -> None:
    async def scenario() -> tuple[Peer, list[RecipientResult]]:
        peer = Peer(
            data_command_reply="451 4.3.2 not now",
            rcpt_replies={"b@remote.test": "550 5.1.1 no such user"},
        )
        async with connected(peer) as delivery:
            results = await deliver(delivery, peer, "a@remote.test", "b@remote.test")
        return peer, results

    peer, results = run(scenario())
    assert outcomes(results) == [(Outcome.DEFERRED, 451, "4.3.2"), (Outcome.FAILED, 550, "5.1.1")]
    assert results[0].text == "not now (in reply to DATA command)"
    assert peer.delivered == []


def test_message_refused_at_end_of_data_fails_every_accepted_recipient() -> None:
    async def scenario() -> list[RecipientResult]:
        peer = Peer(data_reply="554 5.6.0 content refused")
        async with connected(peer) as delivery:
            return await deliver(delivery, peer, "a@remote.test", "b@remote.test")

    results = run(scenario())
    assert outcomes(results) == [(Outcome.FAILED, 554, "5.6.0")] * 2
    assert results[0].text == "content refused (in reply to end of DATA command)"


def test_too_many_recipients_go_in_the_next_transaction() -> None:
    async def scenario() -> tuple[Peer, list[RecipientResult]]:
        peer = Peer(max_rcpts=2)
        async with connected(peer) as delivery:
            addresses = [f"r{n}@remote.test" for n in range(5)]
            results = await deliver(delivery, peer, *addresses)
        return peer, results

    peer, results = run(scenario())
    assert outcomes(results) == [(Outcome.DELIVERED, 250, "2.0.0")] * 5
    assert [d.rcpt_tos for d in peer.delivered] == [
        ["r0@remote.test", "r1@remote.test"],
        ["r2@remote.test", "r3@remote.test"],
        ["r4@remote.test"],
    ]
    assert peer.rsets == 0  # a completed DATA leaves nothing to reset


def test_reused_connection_needs_no_rset_and_a_dead_one_is_replaced() -> None:
    async def scenario() -> tuple[Peer, list[RecipientResult]]:
        peer = Peer()
        async with connected(peer) as delivery:
            results = await deliver(delivery, peer, "a@remote.test")
            results += await deliver(delivery, peer, "b@remote.test")
            assert (peer.connections, peer.rsets) == (1, 0)
            peer.drop_connections()  # the idle connection dies on the peer's side
            await asyncio.sleep(0.05)
            results += await deliver(delivery, peer, "c@remote.test")
        return peer, results

    peer, results = run(scenario())
    assert outcomes(results) == [(Outcome.DELIVERED, 250, "2.0.0")] * 3
    assert [d.rcpt_tos for d in peer.delivered] == [
        ["a@remote.test"],
        ["b@remote.test"],
        ["c@remote.test"],
    ]
    assert peer.connections == 2


def test_peer_without_pipelining_gets_one_command_at_a_time() -> None:
    async def scenario() -> tuple[Peer, list[RecipientResult]]:
        peer = Peer(pipelining=False, rcpt_replies={"b@remote.test": "550 5.1.1 no such user"})
        async with connected(peer) as delivery:
            results = await deliver(delivery, peer, "a@remote.test", "b@remote.test")
            results += await deliver(delivery, peer, "c@remote.test")
        return peer, results

    peer, results = run(scenario())
    assert outcomes(results) == [
        (Outcome.DELIVERED, 250, "2.0.0"),
        (Outcome.FAILED, 550, "5.1.1"),
        (Outcome.DELIVERED, 250, "2.0.0"),
    ]
    assert peer.buffered_at_mail == [b"", b""]  # nothing sent ahead of the MAIL reply
    assert peer.rsets == 1  # the reused connection is checked with RSET first
    assert peer.connections == 1


def _tls_context(tmp_path: Path) -> ssl.SSLContext:
    cert, key = tmp_path / "peer.pem", tmp_path / "peer.key"
    make_self_signed(cert, key, ["peer.remote.test"], [PEER_HOST, UVLOOP_PEER_HOST])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def _two_messages_over_starttls(peer: Peer) -> list[RecipientResult]:
    async with connected(peer) as delivery:
        results = await deliver(delivery, peer, "a@remote.test", "b@remote.test")
        results += await deliver(delivery, peer, "c@remote.test")
    return results


def test_pipelining_over_starttls(tmp_path: Path) -> None:
    peer = Peer(tls_context=_tls_context(tmp_path))
    results = run(_two_messages_over_starttls(peer))
    assert outcomes(results) == [(Outcome.DELIVERED, 250, "2.0.0")] * 3
    assert all(pipelined(b) for b in peer.buffered_at_mail)
    assert peer.connections == 1


def test_pipelining_over_starttls_on_uvloop(tmp_path: Path) -> None:
    """`sitemail serve` runs on uvloop: the reply reader must work on its transports too."""
    uvloop = pytest.importorskip("uvloop")
    peer = Peer(host=UVLOOP_PEER_HOST, tls_context=_tls_context(tmp_path))
    results = uvloop.run(_two_messages_over_starttls(peer))
    assert outcomes(results) == [(Outcome.DELIVERED, 250, "2.0.0")] * 3
    assert all(pipelined(b) for b in peer.buffered_at_mail)
