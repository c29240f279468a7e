"""The outbound SMTP transport over real loopback sockets.

Peers: an aiosmtpd sink run in each test's own event loop (told per recipient and at DATA
what to answer; it records envelopes, raw MAIL/RCPT arguments and connections), the
embedded DNS server for MX and relay-host lookups, and Postfix's own ``smtp-sink`` where
Debian's postfix is installed. Addresses: DNS 127.0.0.71, sinks 127.0.0.72 (and .74),
127.0.0.73 and .79 are left dead on purpose.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiosmtpd import smtp as aiosmtpd_smtp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.support import processes
from tests.support.processes import SMTP_SINK

from sitemail.core.envelope import BodyType, Envelope, EnvelopeRecipient, Notify, Ret
from sitemail.delivery.remote import RemoteDelivery, fingerprint_of
from sitemail.lab.dns_server import EmbeddedDnsServer
from sitemail.queue.content import Content
from sitemail.queue.model import Outcome, QueuedMessage, QueuedRecipient, QueueId, RecipientResult
from sitemail.routing.domain_routes import DomainRoute, match_domain_route
from sitemail.routing.resolver import DnsResolver, Resolver
from sitemail.routing.route import Route, SiteHop, Transport
from sitemail.routing.trace import trace_sites

DNS_HOST = "127.0.0.71"
SINK_HOST = "127.0.0.72"
DEAD_HOST = "127.0.0.73"
OTHER_SINK_HOST = "127.0.0.74"
UNUSED_HOST = "127.0.0.79"
HELO = "ims.sitea.test"
T = TypeVar("T")

CONTENT = (
    b"From: alice@sitea.test\r\n"
    b"To: bob@remote.test\r\n"
    b"Subject: outbound test\r\n"
    b"Message-ID: <m1@sitea.test>\r\n"
    b"\r\n"
    b"Hello.\r\n"
    b".a line starting with a dot\r\n"
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one scenario in a fresh loop, bounded."""

    async def bounded() -> T:
        async with asyncio.timeout(20):
            return await coro

    return asyncio.run(bounded())


# -- the aiosmtpd sink --------------------------------------------------------------------


@dataclass
class Received:
    """One transaction the sink accepted."""

    mail_from: str
    mail_arg: str
    rcpt_tos: list[str]
    rcpt_args: list[str]
    content: bytes
    tls: bool
    peer: str


_DSN_PARAMS = ("NOTIFY=", "ORCPT=", "RET=", "ENVID=")


def _without_dsn(arg: str) -> str:
    """aiosmtpd 1.4.6 refuses RCPT parameters: the sink records DSN ones, then drops them."""
    head, *params = arg.split()
    return " ".join([head, *(p for p in params if not p.upper().startswith(_DSN_PARAMS))])


class SinkSession(aiosmtpd_smtp.SMTP):  # type: ignore[misc,unused-ignore]  # aiosmtpd is untyped
    """aiosmtpd's SMTP, recording raw MAIL/RCPT arguments before DSN params are stripped."""

    def __init__(self, sink: Sink, **kwargs: Any) -> None:
        super().__init__(sink, **kwargs)
        self.sink = sink
        self.mail_arg = ""
        self.rcpt_args: list[str] = []

    @aiosmtpd_smtp.syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str) -> None:
        self.sink.mail_commands.append(arg)
        self.mail_arg, self.rcpt_args = arg, []
        await super().smtp_MAIL(_without_dsn(arg) if arg else arg)

    @aiosmtpd_smtp.syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str) -> None:
        self.rcpt_args.append(arg)
        await super().smtp_RCPT(_without_dsn(arg) if arg else arg)


@dataclass
class Sink:
    """An SMTP peer whose answers the test chooses; counts connections."""

    host: str = SINK_HOST
    port: int = 0
    hostname: str = "sink.remote.test"
    dsn: bool = True
    smtputf8: bool = True
    tls_context: ssl.SSLContext | None = None
    max_rcpts: int = 0  # 0: no limit; else 452 4.5.3 beyond it
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str = ""
    connections: int = 0
    mail_commands: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    server: asyncio.Server | None = None
    sessions: list[SinkSession] = field(default_factory=list)

    def _session(self) -> SinkSession:
        self.connections += 1
        session = SinkSession(
            self,
            hostname=self.hostname,
            enable_SMTPUTF8=self.smtputf8,
            tls_context=self.tls_context,
            loop=asyncio.get_running_loop(),
            timeout=10,
        )
        self.sessions.append(session)
        return session

    def drop_connections(self) -> None:
        """Close every open session from the server side (an idle timeout, a restart)."""
        for session in self.sessions:
            if session.transport is not None:
                session.transport.close()

    async def start(self) -> Sink:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._session, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    # aiosmtpd handler hooks

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.dsn:
            responses.insert(-1, "250-DSN")
        responses.insert(-1, "250-ENHANCEDSTATUSCODES")
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = self.rcpt_replies.get(address.lower())
        if reply:
            return reply
        if self.max_rcpts and len(envelope.rcpt_tos) >= self.max_rcpts:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SinkSession, session: Any, envelope: Any) -> str:
        if self.data_reply:
            return self.data_reply
        self.received.append(
            Received(
                mail_from=envelope.mail_from,
                mail_arg=server.mail_arg,
                rcpt_tos=list(envelope.rcpt_tos),
                rcpt_args=list(server.rcpt_args),
                content=envelope.original_content,
                tls=session.ssl is not None,
                peer=session.peer[0],
            )
        )
        return f"250 2.0.0 Ok: queued as S{len(self.received)}"


@asynccontextmanager
async def running(*sinks: Sink) -> AsyncIterator[None]:
    for sink in sinks:
        await sink.start()
    try:
        yield
    finally:
        for sink in sinks:
            await sink.stop()


@asynccontextmanager
async def transport(resolver: Resolver, **kwargs: Any) -> AsyncIterator[RemoteDelivery]:
    options: dict[str, Any] = {
        "helo_name": HELO,
        "connect_timeout": 2.0,
        "command_timeout": 5.0,
        "data_timeout": 5.0,
    }
    options.update(kwargs)
    delivery = RemoteDelivery(resolver, **options)
    try:
        yield delivery
    finally:
        await delivery.aclose()
        await asyncio.sleep(0.05)  # let the sink see the QUITs before it closes


# -- messages -----------------------------------------------------------------------------


def message(
    *recipients: EnvelopeRecipient,
    sender: str = "alice@sitea.test",
    ret: Ret | None = None,
    envid: str = "",
    smtputf8: bool = False,
    body: BodyType = BodyType.SEVEN_BIT,
) -> QueuedMessage:
    envelope = Envelope(
        sender=sender, recipients=recipients, ret=ret, envid=envid, smtputf8=smtputf8, body=body
    )
    return QueuedMessage(QueueId("Q1"), envelope, 0.0, len(CONTENT), "<m1@sitea.test>", False)


def work(
    msg: QueuedMessage, transport_: Transport, nexthop: str
) -> list[tuple[QueuedRecipient, Route]]:
    return [
        (
            QueuedRecipient(i + 1, msg.queue_id, rcpt, 0, None, False),
            Route(transport_, nexthop, rcpt.address),
        )
        for i, rcpt in enumerate(msg.envelope.recipients)
    ]


def rcpt(address: str, **kwargs: Any) -> EnvelopeRecipient:
    return EnvelopeRecipient(address, **kwargs)


async def relay(
    delivery: RemoteDelivery, nexthop: str, *recipients: EnvelopeRecipient, **kwargs: Any
) -> list[RecipientResult]:
    msg = message(*recipients, **kwargs)
    return await delivery.deliver(msg, Content.of(CONTENT), work(msg, Transport.RELAY, nexthop))


def by_outcome(results: list[RecipientResult]) -> list[tuple[Outcome, int, str]]:
    return [(r.outcome, r.code, r.status) for r in results]


# -- DNS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dns() -> Iterator[EmbeddedDnsServer]:
    with EmbeddedDnsServer(DNS_HOST, 0, zones=["remote.test", "partner.test"]) as server:
        server.add("mx1.remote.test", "A", DEAD_HOST)
        server.add("mx2.remote.test", "A", SINK_HOST)
        server.add("relay.remote.test", "A", SINK_HOST)
        server.add("remote.test", "MX", "10 mx1.remote.test.")
        server.add("remote.test", "MX", "20 mx2.remote.test.")
        server.add("nullmx.remote.test", "MX", "0 .")
        server.add("selfmx.remote.test", "MX", "10 mx2.remote.test.")
        server.add("implicit.remote.test", "A", SINK_HOST)
        server.add("broken.remote.test", "MX", "10 mx2.remote.test.")
        server.set_failing("broken.remote.test")
        yield server


@pytest.fixture
def resolver(dns: EmbeddedDnsServer) -> Resolver:
    return DnsResolver([dns.nameserver], timeout=1.0, lifetime=2.0)


# -- TLS material ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    certfile: Path
    keyfile: Path
    fingerprint: str

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sink.remote.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(
        certfile, keyfile, fingerprint_of(cert.public_bytes(serialization.Encoding.DER))
    )


# -- relay and per-recipient results ---------------------------------------------------------


def test_remote_relay_delivers_and_keeps_the_content(resolver: Resolver) -> None:
    """A relay to host:port delivers; the sink gets the envelope and the exact content."""

    async def scenario() -> tuple[list[RecipientResult], Sink]:
        sink = Sink()
        async with running(sink), transport(resolver) as delivery:
            results = await relay(delivery, f"{SINK_HOST}:{sink.port}", rcpt("bob@remote.test"))
        return results, sink

    results, sink = run(scenario())
    assert by_outcome(results) == [(Outcome.DELIVERED, 250, "2.0.0")]
    assert results[0].remote_mta == SINK_HOST
    assert "queued as S1" in results[0].text
    assert len(sink.received) == 1
    got = sink.received[0]
    assert (got.mail_from, got.rcpt_tos) == ("alice@sitea.test", ["bob@remote.test"])
    assert got.content == CONTENT


def test_remote_null_sender_is_sent_as_empty_reverse_path(resolver: Resolver) -> None:
    """A DSN's null sender goes out as MAIL FROM:<>."""

    async def scenario() -> Sink:
        sink = Sink()
        async with running(sink), transport(resolver) as delivery:
            results = await relay(
                delivery, f"{SINK_HOST}:{sink.port}", rcpt("bob@remote.test"), sender=""
            )
            assert [r.outcome for r in results] == [Outcome.DELIVERED]
        return sink

    sink = run(scenario())
    assert sink.mail_commands[0].startswith("FROM:<> ")
    assert sink.received[0].mail_from == "<>"  # how aiosmtpd spells the null sender


def test_remote_domain_route_relays_to_named_host_and_keeps_recipient(
    resolver: Resolver,
) -> None:
    """A domain route "partner.test -> relay.remote.test:port" resolves the host by A, keeps RCPT."""

    async def scenario() -> tuple[list[RecipientResult], Sink]:
        sink = Sink()
        async with running(sink), transport(resolver) as delivery:
            routes = [DomainRoute("partner.test", "relay.remote.test", sink.port)]
            route = match_domain_route(routes, "deep.partner.test")
            assert route is not None
            results = await relay(delivery, route.nexthop, rcpt("carol@deep.partner.test"))
        return results, sink

    results, sink = run(scenario())
    assert by_outcome(results) == [(Outcome.DELIVERED, 250, "2.0.0")]
    assert results[0].remote_mta == "relay.remote.test"
    assert sink.received[0].rcpt_tos == ["carol@deep.partner.test"]


def test_remote_mixed_replies_in_one_transaction(resolver: Resolver) -> None:
    """250, 451 and 550 at RCPT give delivered, deferred and failed; one DATA for the 250."""

    async def scenario() -> tuple[list[RecipientResult], Sink]:
        sink = Sink(
            rcpt_replies={
                "later@remote.test": "451 4.2.0 Try again later",
                "nobody@remote.test": "550 5.1.1 No such user here",
            }
        )
        async with running(sink), transport(resolver) as delivery:
            results = await relay(
                delivery,
                f"{SINK_HOST}:{sink.port}",
                rcpt("ok@remote.test"),
                rcpt("later@remote.test"),
                rcpt("nobody@remote.test"),
            )
        return results, sink

    results, sink = run(scenario())
    assert by_outcome(results) == [
        (Outcome.DELIVERED, 250, "2.0.0"),
        (Outcome.DEFERRED, 451, "4.2.0"),
        (Outcome.FAILED, 550, "5.1.1"),
    ]
    assert [r.rcpt_id for r in results] == [1, 2, 3]
    assert results[2].text == "No such user here (in reply to RCPT TO command)"
    assert all(r.remote_mta == SINK_HOST for r in results)
    assert len(sink.received) == 1
    assert sink.received[0].rcpt_tos == ["ok@remote.test"]


def test_remote_data_451_defers_every_accepted_recipient(resolver: Resolver) -> None:
    """A 451 to the message defers all accepted recipients; a 550 at RCPT still fails."""

    async def scenario() -> list[RecipientResult]:
        sink = Sink(
            data_reply="451 4.3.0 Queue file write error",
            rcpt_replies={"nobody@remote.test": "550 5.1.1 No such user"},
        )
        async with running(sink), transport(resolver) as delivery:
            return await relay(
                delivery,
                f"{SINK_HOST}:{sink.port}",
                rcpt("a@remote.test"),
                rcpt("b@remote.test"),
                rcpt("nobody@remote.test"),
            )

    results = run(scenario())
    assert by_outcome(results) == [
        (Outcome.DEFERRED, 451, "4.3.0"),
        (Outcome.DEFERRED, 451, "4.3.0"),
        (Outcome.FAILED, 550, "5.1.1"),
    ]
    assert "in reply to end of DATA command" in results[0].text


def test_remote_data_554_fails_every_accepted_recipient(resolver: Resolver) -> None:
    """A 5xx to the message fails the accepted recipients (a DSN follows for each)."""

    async def scenario() -> list[RecipientResult]:
        sink = Sink(data_reply="554 5.7.1 Message refused")
        async with running(sink), transport(resolver) as delivery:
            return await relay(
                delivery, f"{SINK_HOST}:{sink.port}", rcpt("a@remote.test"), rcpt("b@remote.test")
            )

    assert by_outcome(run(scenario())) == [(Outcome.FAILED, 554, "5.7.1")] * 2


def test_remote_connection_refused_defers(resolver: Resolver) -> None:
    """Nobody listening: deferred 4.4.1, with the OS's reason, no remote MTA."""

    async def scenario() -> list[RecipientResult]:
        async with transport(resolver) as delivery:
            return await relay(delivery, f"{UNUSED_HOST}:2599", rcpt("a@remote.test"))

    results = run(scenario())
    assert by_outcome(results) == [(Outcome.DEFERRED, 451, "4.4.1")]
    assert "Connection refused" in results[0].text
    assert f"[{UNUSED_HOST}]:2599" in results[0].text
    assert results[0].remote_mta == ""


def test_remote_silent_server_times_out_and_defers(resolver: Resolver) -> None:
    """A peer that accepts TCP but never greets: deferred 4.4.1 after the connect timeout."""

    async def scenario() -> tuple[list[RecipientResult], float]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, SINK_HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with transport(resolver, connect_timeout=0.5) as delivery:
                started = time.monotonic()
                results = await relay(delivery, f"{SINK_HOST}:{port}", rcpt("a@remote.test"))
                return results, time.monotonic() - started
        finally:
            server.close()

    results, elapsed = run(scenario())
    assert by_outcome(results) == [(Outcome.DEFERRED, 451, "4.4.1")]
    assert "timed out" in results[0].text
    assert elapsed < 3


def test_remote_reuses_one_connection_for_two_deliveries(resolver: Resolver) -> None:
    """Two messages to one destination travel over one TCP connection (RSET between)."""

    async def scenario() -> tuple[Sink, int]:
        sink = Sink()
        async with running(sink), transport(resolver) as delivery:
            nexthop = f"{SINK_HOST}:{sink.port}"
            first = await relay(delivery, nexthop, rcpt("a@remote.test"))
            second = await relay(delivery, nexthop, rcpt("b@remote.test"))
            assert [r.outcome for r in first + second] == [Outcome.DELIVERED] * 2
            idle = delivery.idle_connections()
        return sink, idle

    sink, idle = run(scenario())
    assert sink.connections == 1
    assert idle == 1
    assert [r.rcpt_tos for r in sink.received] == [["a@remote.test"], ["b@remote.test"]]


def test_remote_replaces_a_pooled_connection_the_peer_closed(resolver: Resolver) -> None:
    """An idle connection the server dropped is replaced without a failure."""

    async def scenario() -> tuple[Sink, list[RecipientResult]]:
        sink = Sink()
        async with running(sink), transport(resolver) as delivery:
            nexthop = f"{SINK_HOST}:{sink.port}"
            await relay(delivery, nexthop, rcpt("a@remote.test"))
            assert delivery.idle_connections() == 1
            sink.drop_connections()
            await asyncio.sleep(0.05)
            results = await relay(delivery, nexthop, rcpt("b@remote.test"))
        return sink, results

    sink, results = run(scenario())
    assert by_outcome(results) == [(Outcome.DELIVERED, 250, "2.0.0")]
    assert sink.connections == 2


def test_remote_pool_bounds_connections_per_destination(resolver: Resolver) -> None:
    """20 concurrent messages to one peer use at most 3 connections, and all arrive."""

    async def scenario() -> tuple[Sink, list[RecipientResult]]:
        sink = Sink()
        async with (
            running(sink),
            transport(resolver, max_connections_per_destination=3) as delivery,
        ):
            nexthop = f"{SINK_HOST}:{sink.port}"
            batches = await asyncio.gather(
                *(relay(delivery, nexthop, rcpt(f"u{i}@remote.test")) for i in range(20))
            )
        return sink, [r for batch in batches for r in batch]

    sink, results = run(scenario())
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 20
    assert 1 <= sink.connections <= 3
    assert len(sink.received) == 20


def test_remote_closes_idle_connections_past_the_idle_timeout(resolver: Resolver) -> None:
    """An idle connection older than idle_timeout is closed; the next message reconnects."""
    now = [100.0]

    async def scenario() -> tuple[Sink, int]:
        sink = Sink()
        async with running(sink), transport(resolver, idle_timeout=10.0, clock=lambda: now[0]) as d:
            nexthop = f"{SINK_HOST}:{sink.port}"
            await relay(d, nexthop, rcpt("a@remote.test"))
            now[0] += 11
            pruned = d.prune_idle()
            results = await relay(d, nexthop, rcpt("b@remote.test"))
            assert [r.outcome for r in results] == [Outcome.DELIVERED]
        return sink, pruned

    sink, pruned = run(scenario())
    assert pruned == 1
    assert sink.connections == 2


def test_remote_binds_the_source_address(resolver: Resolver) -> None:
    """With source_address the peer sees our chosen loopback address as the client."""

    async def scenario() -> Sink:
        sink = Sink()
        async with running(sink), transport(resolver, source_address="127.0.0.75") as delivery:
            await relay(delivery, f"{SINK_HOST}:{sink.port}", rcpt("a@remote.test"))
        return sink

    assert run(scenario()).received[0].peer == "127.0.0.75"


def test_remote_splits_transactions_after_452_too_many_recipients(resolver: Resolver) -> None:
    """A 452 4.5.3 after some accepted recipients sends the rest in a second transaction."""

    async def scenario() -> tuple[list[RecipientResult], Sink]:
        sink = Sink(max_rcpts=2)
        async with running(sink), transport(resolver) as delivery:
            results = await relay(
                delivery,
                f"{SINK_HOST}:{sink.port}",
                *(rcpt(f"u{i}@remote.test") for i in range(5)),
            )
        return results, sink

    results, sink = run(scenario())
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 5
    assert [len(r.rcpt_tos) for r in sink.received] == [2, 2, 1]
    assert sink.connections == 1


def test_remote_peer_greeting_with_our_name_is_a_loop(resolver: Resolver) -> None:
    """A peer that greets with our own HELO name is ourselves: failed 5.4.6, nothing sent."""

    async def scenario() -> tuple[list[RecipientResult], Sink]:
        sink = Sink(hostname=HELO)
        async with running(sink), transport(resolver) as delivery:
            results = await relay(delivery, f"{SINK_HOST}:{sink.port}", rcpt("a@remote.test"))
        return results, sink

    results, sink = run(scenario())
    assert by_outcome(results) == [(Outcome.FAILED, 554, "5.4.6")]
    assert "loops back to myself" in results[0].text
    assert sink.mail_commands == []


def test_remote_site_route_uses_the_site_lookup(resolver: Resolver) -> None:
    """A site route goes to the relay host the site hop names and carries a trace field
    naming this site; an unknown site is deferred."""

    async def scenario() -> tuple[list[RecipientResult], list[RecipientResult], Sink]:
        sink = Sink()
        async with running(sink):
            hops = {
                "SiteB": SiteHop(
                    "SiteB", "siteb.test", f"relay.remote.test:{sink.port}", frozenset()
                )
            }
            async with transport(resolver, site_hop=hops.get, trace_site="SiteA") as delivery:
                msg = message(rcpt("dave@siteb.test"))
                known = await delivery.deliver(
                    msg, Content.of(CONTENT), work(msg, Transport.SITE, "SiteB")
                )
                unknown = await delivery.deliver(
                    msg, Content.of(CONTENT), work(msg, Transport.SITE, "SiteC")
                )
        return known, unknown, sink

    known, unknown, sink = run(scenario())
    assert by_outcome(known) == [(Outcome.DELIVERED, 250, "2.0.0")]
    assert by_outcome(unknown) == [(Outcome.DEFERRED, 451, "4.3.5")]
    first = sink.received[0].content.split(b"\r\n", 1)[0]
    assert first.startswith(b"X-Sitemail-Trace: SiteA; id=")
    assert set(trace_sites(sink.received[0].content)) == {"SiteA"}


def test_remote_site_without_relay_goes_to_the_routing_address_mx(resolver: Resolver) -> None:
    """No domain route for the routing address: its MX records decide (mx2 is the sink)."""

    async def scenario() -> tuple[list[RecipientResult], Sink]:
        sink = Sink(port=0)
        async with running(sink):
            hops = {"SiteB": SiteHop("SiteB", "selfmx.remote.test", None, frozenset())}
            async with transport(resolver, site_hop=hops.get, port=sink.port) as delivery:
                msg = message(rcpt("dave@example.test"))
                results = await delivery.deliver(
                    msg, Content.of(CONTENT), work(msg, Transport.SITE, "SiteB")
                )
        return results, sink

    results, sink = run(scenario())
    assert by_outcome(results) == [(Outcome.DELIVERED, 250, "2.0.0")]
    assert sink.received[0].rcpt_tos == ["dave@example.test"]  # never rewritten


def test_remote_site_with_pinned_certificate_mismatch_defers(
    resolver: Resolver, certificate: Certificate
) -> None:
    """A site pinned to another certificate gets nothing, not even in plaintext: 4.7.5."""

    async def scenario() -> tuple[list[RecipientResult], Sink]:
        sink = Sink(tls_context=certificate.server_context())
        async with running(sink):
            hop = SiteHop("SiteB", "siteb.test", f"{SINK_HOST}:{sink.port}", frozenset({"ab" * 32}))
            async with transport(resolver, site_hop={"SiteB": hop}.get) as delivery:
                msg = message(rcpt("dave@siteb.test"))
                results = await delivery.deliver(
                    msg, Content.of(CONTENT), work(msg, Transport.SITE, "SiteB")
                )
        return results, sink

    results, sink = run(scenario())
    assert by_outcome(results) == [(Outcome.DEFERRED, 451, "4.7.5")]
    assert sink.mail_commands == []


def test_remote_relay_to_this_server_fails_546_without_connecting(resolver: Resolver) -> None:
    """A domain route or site hop naming our own listening address and port is a 5.4.6
    error at once (never a delivery to ourselves); another port on the address is not us."""

    async def scenario() -> tuple[list[RecipientResult], list[RecipientResult], Sink]:
        sink = Sink()
        async with running(sink), transport(resolver, local_addresses=[SINK_HOST]) as delivery:
            delivery.listen_ports.add(sink.port + 1)
            other = await relay(delivery, f"{SINK_HOST}:{sink.port}", rcpt("a@remote.test"))
            delivery.listen_ports.add(sink.port)
            me = await relay(delivery, f"{SINK_HOST}:{sink.port}", rcpt("a@remote.test"))
        return other, me, sink

    other, me, sink = run(scenario())
    assert by_outcome(other) == [(Outcome.DELIVERED, 250, "2.0.0")]
    assert by_outcome(me) == [(Outcome.FAILED, 554, "5.4.6")]
    assert "loop to myself" in me[0].text
    assert sink.connections == 1


# -- MX ---------------------------------------------------------------------------------------


def mx_deliver(
    resolver: Resolver, domain: str, sink: Sink | None = None, **kwargs: Any
) -> list[RecipientResult]:
    async def scenario() -> list[RecipientResult]:
        msg = message(rcpt(f"bob@{domain}"))
        sinks = (sink,) if sink is not None else ()
        async with running(*sinks):
            port = sink.port if sink is not None else 2599
            async with transport(resolver, port=port, **kwargs) as delivery:
                return await delivery.deliver(
                    msg, Content.of(CONTENT), work(msg, Transport.MX, domain)
                )

    return run(scenario())


def test_remote_mx_falls_back_to_the_next_preference(resolver: Resolver) -> None:
    """MX 10 is dead, MX 20 answers: delivered, remote MTA is the second MX."""
    sink = Sink()
    results = mx_deliver(resolver, "remote.test", sink)
    assert by_outcome(results) == [(Outcome.DELIVERED, 250, "2.0.0")]
    assert results[0].remote_mta == "mx2.remote.test"
    assert sink.received[0].rcpt_tos == ["bob@remote.test"]


def test_remote_mx_all_hosts_dead_defers_with_the_last_error(resolver: Resolver) -> None:
    """Nothing listens on either MX: deferred 4.4.1 naming the last host tried."""
    results = mx_deliver(resolver, "remote.test")
    assert by_outcome(results) == [(Outcome.DEFERRED, 451, "4.4.1")]
    assert "mx2.remote.test" in results[0].text


def test_remote_mx_implicit_mx_uses_the_a_record(resolver: Resolver) -> None:
    """A domain without MX is its own mail host (RFC 5321 §5.1)."""
    results = mx_deliver(resolver, "implicit.remote.test", Sink())
    assert by_outcome(results) == [(Outcome.DELIVERED, 250, "2.0.0")]
    assert results[0].remote_mta == "implicit.remote.test"


def test_remote_mx_null_mx_fails(resolver: Resolver) -> None:
    """A null MX fails at once with 5.1.10 (RFC 7505)."""
    results = mx_deliver(resolver, "nullmx.remote.test")
    assert by_outcome(results) == [(Outcome.FAILED, 556, "5.1.10")]


def test_remote_mx_nxdomain_fails(resolver: Resolver) -> None:
    """A domain that does not exist fails with 5.1.2."""
    results = mx_deliver(resolver, "nosuch.remote.test")
    assert by_outcome(results) == [(Outcome.FAILED, 550, "5.1.2")]


def test_remote_mx_dns_failure_defers(resolver: Resolver) -> None:
    """SERVFAIL is temporary: deferred 4.4.3."""
    results = mx_deliver(resolver, "broken.remote.test")
    assert by_outcome(results) == [(Outcome.DEFERRED, 451, "4.4.3")]


def test_remote_mx_to_ourselves_fails_and_connects_nowhere(resolver: Resolver) -> None:
    """The only MX is one of our addresses: failed 5.4.6, no connection made."""
    sink = Sink()
    results = mx_deliver(resolver, "selfmx.remote.test", sink, local_addresses=[SINK_HOST])
    assert by_outcome(results) == [(Outcome.FAILED, 554, "5.4.6")]
    assert sink.connections == 0


def test_remote_mx_address_literal_is_used_directly(resolver: Resolver) -> None:
    """user@[127.0.0.72] goes to that address without DNS."""
    sink = Sink()
    results = mx_deliver(resolver, f"[{SINK_HOST}]", sink)
    assert by_outcome(results) == [(Outcome.DELIVERED, 250, "2.0.0")]


# -- TLS --------------------------------------------------------------------------------------


def test_remote_uses_opportunistic_starttls(resolver: Resolver, certificate: Certificate) -> None:
    """STARTTLS offered (self-signed certificate): the message travels encrypted."""

    async def scenario() -> tuple[list[RecipientResult], Sink]:
        sink = Sink(tls_context=certificate.server_context())
        async with running(sink), transport(resolver) as delivery:
            results = await relay(delivery, f"{SINK_HOST}:{sink.port}", rcpt("a@remote.test"))
        return results, sink

    results, sink = run(scenario())
    assert by_outcome(results) == [(Outcome.DELIVERED, 250, "2.0.0")]
    assert sink.received[0].tls


def test_remote_tls_handshake_failure_retries_in_plaintext(resolver: Resolver) -> None:
    """Opportunistic: a failed handshake is retried at once on a new plaintext connection."""

    async def scenario() -> tuple[list[RecipientResult], Sink]:
        broken = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        broken.set_ciphers("aNULL")  # nothing a client will agree to
        broken.maximum_version = ssl.TLSVersion.TLSv1_2
        sink = Sink(tls_context=broken)
        async with running(sink), transport(resolver) as delivery:
            results = await relay(delivery, f"{SINK_HOST}:{sink.port}", rcpt("a@remote.test"))
        return results, sink

    results, sink = run(scenario())
    assert by_outcome(results) == [(Outcome.DELIVERED, 250, "2.0.0")]
    assert sink.connections == 2
    assert not sink.received[0].tls


def test_remote_pinned_fingerprint_match_delivers_over_tls(
    resolver: Resolver, certificate: Certificate
) -> None:
    """With the right pin the message goes over TLS."""

    async def scenario() -> tuple[list[RecipientResult], Sink]:
        sink = Sink(tls_context=certificate.server_context())
        async with running(sink):
            nexthop = f"{SINK_HOST}:{sink.port}"
            pins = {nexthop: certificate.fingerprint.upper()}
            async with transport(resolver, pinned_fingerprints=pins) as delivery:
                results = await relay(delivery, nexthop, rcpt("a@remote.test"))
        return results, sink

    results, sink = run(scenario())
    assert by_outcome(results) == [(Outcome.DELIVERED, 250, "2.0.0")]
    assert sink.received[0].tls


def test_remote_pinned_fingerprint_mismatch_defers_never_plaintext(
    resolver: Resolver, certificate: Certificate
) -> None:
    """A wrong pin: deferred 4.7.5, no MAIL command ever sent, not even in plaintext."""

    async def scenario() -> tuple[list[RecipientResult], Sink]:
        sink = Sink(tls_context=certificate.server_context())
        async with running(sink):
            nexthop = f"{SINK_HOST}:{sink.port}"
            async with transport(resolver, pinned_fingerprints={nexthop: "ab" * 32}) as delivery:
                results = await relay(delivery, nexthop, rcpt("a@remote.test"))
        return results, sink

    results, sink = run(scenario())
    assert by_outcome(results) == [(Outcome.DEFERRED, 451, "4.7.5")]
    assert "does not match the pinned fingerprint" in results[0].text
    assert certificate.fingerprint in results[0].text
    assert sink.mail_commands == []
    assert sink.connections == 1


def test_remote_pinned_destination_without_starttls_defers(resolver: Resolver) -> None:
    """A pinned next hop that offers no STARTTLS gets nothing: deferred 4.7.5."""

    async def scenario() -> tuple[list[RecipientResult], Sink]:
        sink = Sink()
        async with running(sink):
            nexthop = f"{SINK_HOST}:{sink.port}"
            async with transport(resolver, pinned_fingerprints={nexthop: "ab" * 32}) as delivery:
                results = await relay(delivery, nexthop, rcpt("a@remote.test"))
        return results, sink

    results, sink = run(scenario())
    assert by_outcome(results) == [(Outcome.DEFERRED, 451, "4.7.5")]
    assert "does not offer STARTTLS" in results[0].text
    assert sink.mail_commands == []


# -- parameters -------------------------------------------------------------------------------


def test_remote_passes_dsn_parameters_through(resolver: Resolver) -> None:
    """RET/ENVID on MAIL and per-recipient NOTIFY/ORCPT on RCPT reach a DSN-capable peer."""

    async def scenario() -> Sink:
        sink = Sink()
        async with running(sink), transport(resolver) as delivery:
            results = await relay(
                delivery,
                f"{SINK_HOST}:{sink.port}",
                rcpt(
                    "a@remote.test",
                    notify=frozenset({Notify.SUCCESS, Notify.FAILURE}),
                    orcpt="rfc822;Orig+1@Example.test",
                ),
                rcpt("b@remote.test", notify=frozenset({Notify.NEVER})),
                rcpt("c@remote.test"),
                ret=Ret.HDRS,
                envid="Q1=x y",
            )
            assert [r.outcome for r in results] == [Outcome.DELIVERED] * 3
        return sink

    sink = run(scenario())
    got = sink.received[0]
    assert got.mail_arg.split()[1:] == [f"SIZE={len(CONTENT)}", "RET=HDRS", "ENVID=Q1+3Dx+20y"]
    assert got.rcpt_args == [
        "TO:<a@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Orig+2B1@Example.test",
        "TO:<b@remote.test> NOTIFY=NEVER",
        "TO:<c@remote.test>",
    ]


def test_remote_omits_dsn_parameters_when_not_offered(resolver: Resolver) -> None:
    """Without DSN in EHLO no RET/ENVID/NOTIFY/ORCPT is sent, and delivery still works."""

    async def scenario() -> Sink:
        sink = Sink(dsn=False)
        async with running(sink), transport(resolver) as delivery:
            results = await relay(
                delivery,
                f"{SINK_HOST}:{sink.port}",
                rcpt("a@remote.test", notify=frozenset({Notify.SUCCESS}), orcpt="rfc822;x@y.test"),
                ret=Ret.FULL,
                envid="E1",
            )
            assert [r.outcome for r in results] == [Outcome.DELIVERED]
        return sink

    got = run(scenario()).received[0]
    assert "RET=" not in got.mail_arg
    assert "ENVID=" not in got.mail_arg
    assert got.rcpt_args == ["TO:<a@remote.test>"]


def test_remote_smtputf8_recipient_fails_5_6_7_without_peer_support(resolver: Resolver) -> None:
    """Peer without SMTPUTF8: the non-ASCII recipient fails 5.6.7, the ASCII one is delivered."""

    async def scenario() -> tuple[list[RecipientResult], Sink]:
        sink = Sink(smtputf8=False)
        async with running(sink), transport(resolver) as delivery:
            results = await relay(
                delivery,
                f"{SINK_HOST}:{sink.port}",
                rcpt("jörg@remote.test"),
                rcpt("joerg@remote.test"),
                smtputf8=True,
            )
        return results, sink

    results, sink = run(scenario())
    assert by_outcome(results) == [
        (Outcome.FAILED, 554, "5.6.7"),
        (Outcome.DELIVERED, 250, "2.0.0"),
    ]
    assert sink.received[0].rcpt_tos == ["joerg@remote.test"]


def test_remote_smtputf8_sent_when_offered(resolver: Resolver) -> None:
    """A UTF-8 sender and recipient go through with SMTPUTF8 and BODY=8BITMIME."""

    async def scenario() -> Sink:
        sink = Sink()
        async with running(sink), transport(resolver) as delivery:
            results = await relay(
                delivery,
                f"{SINK_HOST}:{sink.port}",
                rcpt("jörg@remote.test"),
                sender="zoë@sitea.test",
                smtputf8=True,
                body=BodyType.EIGHT_BIT,
            )
            assert [r.outcome for r in results] == [Outcome.DELIVERED]
        return sink

    got = run(scenario()).received[0]
    assert got.mail_from == "zoë@sitea.test"
    assert got.rcpt_tos == ["jörg@remote.test"]
    assert "SMTPUTF8" in got.mail_arg.split()
    assert "BODY=8BITMIME" in got.mail_arg.split()


def test_remote_smtputf8_sender_without_peer_support_fails_everyone(resolver: Resolver) -> None:
    """A UTF-8 sender cannot be expressed without SMTPUTF8: every recipient fails 5.6.7."""

    async def scenario() -> tuple[list[RecipientResult], Sink]:
        sink = Sink(smtputf8=False)
        async with running(sink), transport(resolver) as delivery:
            results = await relay(
                delivery,
                f"{SINK_HOST}:{sink.port}",
                rcpt("a@remote.test"),
                sender="zoë@sitea.test",
                smtputf8=True,
            )
        return results, sink

    results, sink = run(scenario())
    assert by_outcome(results) == [(Outcome.FAILED, 554, "5.6.7")]
    assert sink.mail_commands == []


def test_remote_groups_by_nexthop_in_one_call(resolver: Resolver) -> None:
    """Recipients of two next hops in one call each reach their own peer; order is kept."""

    async def scenario() -> tuple[list[RecipientResult], Sink, Sink]:
        first, second = Sink(), Sink(host=OTHER_SINK_HOST)
        async with running(first, second), transport(resolver) as delivery:
            msg = message(rcpt("a@one.test"), rcpt("b@two.test"), rcpt("c@one.test"))
            one, two = f"{SINK_HOST}:{first.port}", f"{OTHER_SINK_HOST}:{second.port}"
            members = [
                (queued, Route(Transport.RELAY, hop, route.recipient))
                for hop, (queued, route) in zip(
                    [one, two, one], work(msg, Transport.RELAY, ""), strict=True
                )
            ]
            results = await delivery.deliver(msg, Content.of(CONTENT), members)
        return results, first, second

    results, first, second = run(scenario())
    assert [r.rcpt_id for r in results] == [1, 2, 3]
    assert [r.remote_mta for r in results] == [SINK_HOST, OTHER_SINK_HOST, SINK_HOST]
    assert first.received[0].rcpt_tos == ["a@one.test", "c@one.test"]
    assert second.received[0].rcpt_tos == ["b@two.test"]


def test_remote_bad_relay_nexthop_defers_as_configuration_error(resolver: Resolver) -> None:
    """A malformed relay next hop is a configuration problem: deferred 4.3.5, not bounced."""

    async def scenario() -> list[RecipientResult]:
        async with transport(resolver) as delivery:
            return await relay(delivery, "bad host:99999", rcpt("a@remote.test"))

    assert by_outcome(run(scenario())) == [(Outcome.DEFERRED, 451, "4.3.5")]


# -- Postfix's smtp-sink ------------------------------------------------------------------------


@contextmanager
def postfix_sink(folder: Path, *flags: str) -> Iterator[tuple[int, Path]]:
    """Postfix's smtp-sink on 127.0.0.72, dumping transactions to a file; stopped by pid."""
    with processes.postfix_sink(folder, SINK_HOST, *flags) as sink:
        yield sink


def _dump_text(dump: Path, needle: str) -> str:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        text = dump.read_text(errors="replace") if dump.exists() else ""
        if needle in text:
            return text
        time.sleep(0.05)
    return dump.read_text(errors="replace") if dump.exists() else ""


postfix = pytest.mark.skipif(SMTP_SINK is None, reason="Postfix's smtp-sink is not installed")


@pytest.mark.postfix
@postfix
def test_remote_delivers_to_postfix_smtp_sink(resolver: Resolver, tmp_path: Path) -> None:
    """Postfix's smtp-sink takes the message; it records our DSN parameters as sent."""
    with postfix_sink(tmp_path) as (port, dump):

        async def scenario() -> list[RecipientResult]:
            async with transport(resolver) as delivery:
                return await relay(
                    delivery,
                    f"{SINK_HOST}:{port}",
                    rcpt(
                        "a@remote.test", notify=frozenset({Notify.DELAY}), orcpt="rfc822;a@x.test"
                    ),
                    rcpt("b@remote.test"),
                    ret=Ret.FULL,
                    envid="env-1",
                )

        results = run(scenario())
        text = _dump_text(dump, "X-Rcpt-Args: <b@remote.test>")
    assert by_outcome(results) == [(Outcome.DELIVERED, 250, "2.0.0")] * 2
    assert results[0].remote_mta == SINK_HOST
    assert f"X-Helo-Args: {HELO}" in text
    assert "X-Mail-Args: <alice@sitea.test> RET=FULL ENVID=env-1\n" in text  # no SIZE offered
    assert "X-Rcpt-Args: <a@remote.test> NOTIFY=DELAY ORCPT=rfc822;a@x.test" in text
    assert "X-Rcpt-Args: <b@remote.test>\n" in text
    assert "Subject: outbound test" in text


@pytest.mark.postfix
@postfix
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("-r", "RCPT"), (Outcome.DEFERRED, 450, "4.3.0")),
        (("-f", "RCPT"), (Outcome.FAILED, 500, "5.3.0")),
        (("-r", "."), (Outcome.DEFERRED, 450, "4.3.0")),
        (("-f", "."), (Outcome.FAILED, 500, "5.3.0")),
        (("-Q", "RCPT"), (Outcome.DEFERRED, 421, "4.0.0")),
    ],
    ids=["rcpt-4xx", "rcpt-5xx", "data-4xx", "data-5xx", "rcpt-421"],
)
def test_remote_classifies_postfix_smtp_sink_rejections(
    resolver: Resolver, tmp_path: Path, flags: tuple[str, str], expected: tuple[Outcome, int, str]
) -> None:
    """smtp-sink's soft (-r), hard (-f) and 421 (-Q) answers map to deferred/failed."""
    with postfix_sink(tmp_path, *flags) as (port, _):

        async def scenario() -> list[RecipientResult]:
            async with transport(resolver) as delivery:
                return await relay(delivery, f"{SINK_HOST}:{port}", rcpt("a@remote.test"))

        results = run(scenario())
    assert by_outcome(results) == [expected]
