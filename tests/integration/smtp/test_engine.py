"""The SMTP engine over real loopback sockets: protocol, DSN, smuggling, limits, STARTTLS.

Each test starts the engine with `start_smtp_server` in its own event loop (`asyncio.run`) and
talks raw SMTP through asyncio streams, so every byte on the wire is the test's choice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import os
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sitemail.config.model import LimitsConfig
from sitemail.core.envelope import BodyType, Envelope, EnvelopeRecipient, Notify, Ret
from sitemail.core.reply import Reply
from sitemail.queue.content import Content
from sitemail.smtp.engine import SessionInfo, start_smtp_server
from sitemail.store.space import FreeSpace

HOST = "127.0.0.61"
SERVER_NAME = "mx.test.example"
ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3} ")
TEST_LIMITS = LimitsConfig(
    message_size=20_000,
    recipients=3,
    line_length=1000,
    command_length=512,
    timeout=5.0,
    data_timeout=5.0,
    connections_per_client=4,
    connections_total=8,
    error_limit=10,
    error_delay=0.0,
)


def limits_with(**changes: Any) -> LimitsConfig:
    return dataclasses.replace(TEST_LIMITS, **changes)


# -- a policy that records what it was asked -------------------------------------------------


@dataclass
class RecordingPolicy:
    """Accepts everything but `unknown@...`; `fail_accepts` makes the next accepts raise."""

    connect_reply: Reply | None = None
    fail_accepts: int = 0
    mail_error: Exception | None = None
    mails: list[tuple[SessionInfo, str]] = field(default_factory=list)
    rcpts: list[tuple[SessionInfo, EnvelopeRecipient]] = field(default_factory=list)
    accepted: list[tuple[Envelope, bytes, str]] = field(default_factory=list)
    issued: int = 0

    async def check_connect(self, peer_ip: str) -> Reply | None:
        del peer_ip
        return self.connect_reply

    async def check_mail(self, session: SessionInfo, sender: str) -> Reply:
        if self.mail_error is not None:
            raise self.mail_error
        self.mails.append((session, sender))
        return Reply(250, "2.1.0", "Sender ok")

    async def check_rcpt(self, session: SessionInfo, recipient: EnvelopeRecipient) -> Reply:
        self.rcpts.append((session, recipient))
        if recipient.address.startswith("unknown@"):
            return Reply(550, "5.1.1", "No such user here")
        return Reply(250, "2.1.5", "Recipient ok")

    def new_queue_id(self) -> str:
        self.issued += 1
        return f"Q{self.issued:04d}"

    async def accept(self, envelope: Envelope, content: Content, *, queue_id: str) -> Reply:
        if self.fail_accepts:
            self.fail_accepts -= 1
            raise OSError("disk on fire: /secret/path")
        self.accepted.append((envelope, await asyncio.to_thread(content.whole), queue_id))
        return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")


# -- a raw SMTP client ------------------------------------------------------------------------


@dataclass
class Response:
    code: int
    lines: list[str]  # full reply lines, e.g. "250-PIPELINING"

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> str:
        match = re.match(r"^\d{3}[ -](\d\.\d{1,3}\.\d{1,3}) ", self.lines[0])
        return match.group(1) if match else ""


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, wait: float = 5.0) -> Response:
        lines: list[str] = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), wait)
            if not raw:
                raise ConnectionError(f"connection closed after {lines!r}")
            line = raw.decode("utf-8").rstrip("\r\n")
            lines.append(line)
            if line[3:4] != "-":
                return Response(int(line[:3]), lines)

    async def cmd(self, line: str) -> Response:
        await self.send(line.encode("utf-8") + b"\r\n")
        return await self.reply()

    async def replies(self, count: int) -> list[Response]:
        return [await self.reply() for _ in range(count)]

    async def at_eof(self, wait: float = 5.0) -> bool:
        """True once the server has closed the connection (input drained, our side closed)."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), wait)
        except (ConnectionError, TimeoutError):
            return False
        del rest
        await self.close()
        return True

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()

    async def start_tls(self, context: ssl.SSLContext) -> None:
        await self.writer.start_tls(context, server_hostname=SERVER_NAME)


@dataclass
class Harness:
    port: int
    policy: RecordingPolicy

    async def connect(self, *, source: str | None = None, greet: bool = True) -> Client:
        reader, writer = await asyncio.open_connection(
            HOST, self.port, local_addr=(source, 0) if source else None
        )
        client = Client(reader, writer)
        if greet:
            greeting = await client.reply()
            assert greeting.code == 220, greeting.lines
        return client

    async def session(self, *, helo: str = "client.example") -> Client:
        client = await self.connect()
        ehlo = await client.cmd(f"EHLO {helo}")
        assert ehlo.code == 250
        return client


@asynccontextmanager
async def serving(
    policy: RecordingPolicy | None = None,
    *,
    limits: LimitsConfig = TEST_LIMITS,
    tls_context: ssl.SSLContext | None = None,
    tarpit_after: int | None = None,
    space: FreeSpace | None = None,
) -> AsyncIterator[Harness]:
    policy = policy or RecordingPolicy()
    server = await start_smtp_server(
        HOST,
        0,
        policy=policy,
        server_name=SERVER_NAME,
        limits=limits,
        tls_context=tls_context,
        tarpit_after=tarpit_after,
        space=space,
    )
    try:
        yield Harness(server.sockets[0].getsockname()[1], policy)
    finally:
        server.close()
        await server.wait_closed()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(scenario(), 15)

    asyncio.run(bounded())


async def transaction(
    client: Client, body: bytes, *, sender: str = "alice@src.example", rcpts: tuple[str, ...] = ()
) -> Response:
    """MAIL, RCPT(s) and DATA pipelined, then `body` and the end of data; the final reply."""
    commands = [f"MAIL FROM:<{sender}>"] + [
        f"RCPT TO:<{r}>" for r in rcpts or ("bob@dest.example",)
    ]
    await client.send(("\r\n".join([*commands, "DATA"]) + "\r\n").encode())
    replies = await client.replies(len(commands) + 1)
    assert replies[-1].code == 354, [r.lines for r in replies]
    await client.send(body + (b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n"))
    return await client.reply()


MESSAGE = b"From: alice@src.example\r\nTo: bob@dest.example\r\nSubject: hi\r\n\r\nHello.\r\n"


# -- TLS material ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsPair:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> TlsPair:
    """A self-signed certificate for mx.test.example, and contexts for both sides."""
    folder: Path = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return TlsPair(server, client)


# -- EHLO and replies -------------------------------------------------------------------------


def test_ehlo_advertises_extensions(tls_pair: TlsPair) -> None:
    """EHLO lists SIZE with the limit, 8BITMIME, SMTPUTF8, PIPELINING, ENHANCEDSTATUSCODES, DSN, STARTTLS."""

    async def scenario() -> None:
        async with serving(tls_context=tls_pair.server) as srv:
            client = await srv.connect()
            ehlo = await client.cmd("EHLO client.example")
            keywords = [line[4:] for line in ehlo.lines[1:]]
            assert ehlo.lines[0] == f"250-{SERVER_NAME}"
            assert set(keywords) == {
                "PIPELINING",
                f"SIZE {TEST_LIMITS.message_size}",
                "8BITMIME",
                "SMTPUTF8",
                "ENHANCEDSTATUSCODES",
                "DSN",
                "STARTTLS",
            }
            await client.close()

    run(scenario)


def test_ehlo_without_tls_context_omits_starttls_and_auth() -> None:
    """Without a TLS context neither STARTTLS nor AUTH is offered, and STARTTLS is refused."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            ehlo = await client.cmd("EHLO client.example")
            assert not any("STARTTLS" in line or "AUTH" in line for line in ehlo.lines)
            starttls = await client.cmd("STARTTLS")
            assert (starttls.code, starttls.enhanced) == (502, "5.5.1")
            auth = await client.cmd("AUTH PLAIN AGFAYg==")
            assert (auth.code, auth.enhanced) == (502, "5.5.1")
            await client.close()

    run(scenario)


def test_replies_carry_enhanced_status_codes() -> None:
    """NOOP, RSET, VRFY, EXPN, HELP, unknown and out-of-sequence commands, QUIT: all enhanced."""

    async def scenario() -> None:
        limits = limits_with(error_limit=50)
        async with serving(limits=limits) as srv:
            client = await srv.connect()
            expected = [
                ("MAIL FROM:<a@src.example>", 503, "5.5.1"),  # before EHLO
                ("EHLO client.example", 250, ""),  # RFC 2034 section 3: exempt
                ("NOOP", 250, "2.0.0"),
                ("RSET", 250, "2.0.0"),
                ("RSET now", 501, "5.5.4"),
                ("VRFY bob@dest.example", 252, "2.1.5"),
                ("VRFY", 501, "5.5.4"),
                ("EXPN staff", 502, "5.5.1"),
                ("HELP", 214, "2.0.0"),
                ("FROB", 500, "5.5.2"),
                ("RCPT TO:<b@dest.example>", 503, "5.5.1"),
                ("DATA", 503, "5.5.1"),
                ("MAIL FROM:<a@src.example>", 250, "2.1.0"),
                ("MAIL FROM:<again@src.example>", 503, "5.5.1"),
                ("RCPT TO:<unknown@dest.example>", 550, "5.1.1"),
            ]
            for line, code, enhanced in expected:
                response = await client.cmd(line)
                assert (response.code, response.enhanced) == (code, enhanced), response.lines
                if enhanced:
                    assert all(ENHANCED.match(x) for x in response.lines), response.lines
            data = await client.cmd("DATA")
            assert (data.code, data.enhanced) == (554, "5.5.1")  # no valid recipients
            quit_ = await client.cmd("QUIT")
            assert (quit_.code, quit_.enhanced) == (221, "2.0.0")
            assert await client.at_eof()

    run(scenario)


def test_policy_exception_answers_451_without_details() -> None:
    """A policy that raises yields 451 4.3.0 with no exception text, and the session goes on."""

    async def scenario() -> None:
        policy = RecordingPolicy(mail_error=RuntimeError("db password is hunter2"))
        async with serving(policy) as srv:
            client = await srv.session()
            response = await client.cmd("MAIL FROM:<a@src.example>")
            assert (response.code, response.enhanced) == (451, "4.3.0")
            assert "hunter2" not in response.text
            assert "Traceback" not in response.text
            assert "RuntimeError" not in response.text
            assert (await client.cmd("NOOP")).code == 250
            await client.close()

    run(scenario)


def test_connect_policy_refusal_is_sent_and_closes() -> None:
    """A Reply from check_connect replaces the greeting and ends the connection."""

    async def scenario() -> None:
        policy = RecordingPolicy(connect_reply=Reply(554, "5.7.1", "Go away"))
        async with serving(policy) as srv:
            client = await srv.connect(greet=False)
            refusal = await client.reply()
            assert (refusal.code, refusal.enhanced) == (554, "5.7.1")
            assert await client.at_eof()

    run(scenario)


# -- transactions, queue id and Received ----------------------------------------------------


def test_data_reply_names_queue_id_and_received_header_is_prepended() -> None:
    """The 250 after DATA names the queue id, and the stored content starts with our Received."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            reply = await transaction(client, MESSAGE + b"..leading dot\r\n")
            assert (reply.code, reply.enhanced) == (250, "2.0.0")
            envelope, content, queue_id = srv.policy.accepted[0]
            assert f"queued as {queue_id}" in reply.text
            assert content.startswith(
                b"Received: from client.example ([127.0.0.1])\r\n"
                b"\tby mx.test.example with ESMTP id " + queue_id.encode() + b"\r\n"
                b"\tfor <bob@dest.example>; "
            )
            header, _, rest = content.partition(b"\r\n" + MESSAGE[:5])
            assert header.endswith(b"+0000")
            assert rest.endswith(b"\r\n.leading dot\r\n")  # dot-unstuffed
            assert envelope.sender == "alice@src.example"
            assert envelope.client_name == "client.example"
            assert envelope.client_address == "127.0.0.1"
            await client.close()

    run(scenario)


def test_received_header_omits_for_clause_with_several_recipients() -> None:
    """With several recipients the Received header names none of them."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            reply = await transaction(client, MESSAGE, rcpts=("b@dest.example", "c@dest.example"))
            assert reply.code == 250
            _, content, _ = srv.policy.accepted[0]
            header = content.split(b"\r\nFrom:")[0]
            assert b"for <" not in header
            await client.close()

    run(scenario)


def test_pipelining_one_write_gets_ordered_replies() -> None:
    """MAIL, three RCPTs and DATA in one write get five replies in order; then body and QUIT."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            await client.send(
                b"MAIL FROM:<alice@src.example>\r\n"
                b"RCPT TO:<bob@dest.example>\r\n"
                b"RCPT TO:<unknown@dest.example>\r\n"
                b"RCPT TO:<carol@dest.example>\r\n"
                b"DATA\r\n"
            )
            replies = await client.replies(5)
            assert [(r.code, r.enhanced) for r in replies] == [
                (250, "2.1.0"),
                (250, "2.1.5"),
                (550, "5.1.1"),
                (250, "2.1.5"),
                (354, ""),
            ]
            await client.send(MESSAGE + b".\r\nQUIT\r\n")
            done, bye = await client.replies(2)
            assert (done.code, bye.code) == (250, 221)
            assert await client.at_eof()
            envelope = srv.policy.accepted[0][0]
            assert [r.address for r in envelope.recipients] == [
                "bob@dest.example",
                "carol@dest.example",
            ]

    run(scenario)


def test_acceptor_failure_answers_451_and_retry_succeeds() -> None:
    """An acceptor that raises gives 451 4.3.0 (no details); the same message then goes through."""

    async def scenario() -> None:
        async with serving(RecordingPolicy(fail_accepts=1)) as srv:
            client = await srv.session()
            failed = await transaction(client, MESSAGE)
            assert (failed.code, failed.enhanced) == (451, "4.3.0")
            assert "secret" not in failed.text
            assert srv.policy.accepted == []
            retried = await transaction(client, MESSAGE)
            assert (retried.code, retried.enhanced) == (250, "2.0.0")
            assert len(srv.policy.accepted) == 1
            await client.close()

    run(scenario)


# -- DSN and other MAIL/RCPT parameters ------------------------------------------------------


def test_dsn_parameters_reach_envelope() -> None:
    """RET, ENVID, BODY, SMTPUTF8, NOTIFY and ORCPT (xtext-decoded, case kept) reach the envelope."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            await client.send(
                b"MAIL FROM:<alice@src.example> ret=hdrs ENVID=QQ+2B123+3Dabc"
                b" BODY=8bitmime SMTPUTF8 SIZE=1000\r\n"
                b"RCPT TO:<Bob@Dest.Example> NOTIFY=success,FAILURE"
                b" ORCPT=rfc822;Bob+2BTag@Dest.Example\r\n"
                b"RCPT TO:<carol@dest.example> NOTIFY=NEVER\r\n"
                b"RCPT TO:<dave@dest.example>\r\n"
                b"DATA\r\n"
            )
            replies = await client.replies(5)
            assert [r.code for r in replies] == [250, 250, 250, 250, 354], replies
            await client.send(MESSAGE + b".\r\n")
            assert (await client.reply()).code == 250
            envelope, content, _ = srv.policy.accepted[0]
            assert envelope.ret is Ret.HDRS
            assert envelope.envid == "QQ+123=abc"
            assert envelope.body is BodyType.EIGHT_BIT
            assert envelope.smtputf8 is True
            bob, carol, dave = envelope.recipients
            assert bob == EnvelopeRecipient(
                "Bob@dest.example",
                frozenset({Notify.SUCCESS, Notify.FAILURE}),
                "rfc822;Bob+Tag@Dest.Example",
            )
            assert carol.notify == frozenset({Notify.NEVER})
            assert dave == EnvelopeRecipient("dave@dest.example")
            assert srv.policy.rcpts[0][1] == bob
            assert b" with UTF8SMTP id " in content.split(b"\r\n\r\n")[0]
            await client.close()

    run(scenario)


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ("MAIL FROM:<a@src.example> RET=BOGUS", 501),
        ("MAIL FROM:<a@src.example> RET", 501),
        ("MAIL FROM:<a@src.example> ENVID=a+zz", 501),
        ("MAIL FROM:<a@src.example> ENVID=a+0D+0AX-Injected:+20yes", 501),
        ("MAIL FROM:<a@src.example> ENVID=" + "x" * 101, 501),
        ("MAIL FROM:<a@src.example> BODY=BINARYMIME", 501),
        ("MAIL FROM:<a@src.example> SIZE=lots", 501),
        ("MAIL FROM:<a@src.example> SMTPUTF8=yes", 501),
        ("MAIL FROM:<a@src.example> RET=FULL RET=HDRS", 501),
        ("MAIL FROM:<a@src.example> FROB=1", 555),
        ("RCPT TO:<b@dest.example> NOTIFY=NEVER,SUCCESS", 501),
        ("RCPT TO:<b@dest.example> NOTIFY=SOMETIMES", 501),
        ("RCPT TO:<b@dest.example> NOTIFY=", 501),
        ("RCPT TO:<b@dest.example> ORCPT=rfc822", 501),
        ("RCPT TO:<b@dest.example> ORCPT=rfc822;b+4", 501),
        ("RCPT TO:<b@dest.example> ORCPT=rfc822;b+0Ac", 501),
        ("RCPT TO:<b@dest.example> FROB=1", 555),
    ],
)
def test_dsn_invalid_parameter_is_refused(command: str, code: int) -> None:
    """Malformed DSN/ESMTP parameters get 501 5.5.4, unknown ones 555 5.5.4."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            if command.startswith("RCPT"):
                assert (await client.cmd("MAIL FROM:<a@src.example>")).code == 250
            response = await client.cmd(command)
            assert (response.code, response.enhanced) == (code, "5.5.4")
            await client.close()

    run(scenario)


def test_address_non_ascii_needs_smtputf8() -> None:
    """A non-ASCII address without MAIL's SMTPUTF8 gets 553 5.6.7; with it, it is accepted."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            refused = await client.cmd("MAIL FROM:<jörg@src.example>")
            assert (refused.code, refused.enhanced) == (553, "5.6.7")
            accepted = await client.cmd("MAIL FROM:<jörg@src.example> SMTPUTF8")
            assert accepted.code == 250
            rcpt = await client.cmd("RCPT TO:<zoë@dest.example>")
            assert rcpt.code == 250
            await client.close()

    run(scenario)


def test_address_forbidden_forms_are_refused() -> None:
    """Source routes, quoted local parts with '@' and junk addresses get 553 at MAIL and RCPT."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            for line, enhanced in [
                ("MAIL FROM:<@relay.example:a@src.example>", "5.1.7"),
                ("MAIL FROM:<not an address>", "5.1.7"),
            ]:
                response = await client.cmd(line)
                assert (response.code, response.enhanced) == (553, enhanced), line
            assert (await client.cmd("MAIL FROM:<>")).code == 250  # the null sender
            for line in ['RCPT TO:<"a@b"@dest.example>', "RCPT TO:<>", "RCPT TO:<@x:b@y.example>"]:
                response = await client.cmd(line)
                assert (response.code, response.enhanced) == (553, "5.1.3"), line
            assert srv.policy.mails[0][1] == ""
            await client.close()

    run(scenario)


# -- smuggling and bare newlines ----------------------------------------------------------------

SMUGGLED = b"MAIL FROM:<evil@evil.example>\r\nRCPT TO:<victim@dest.example>\r\nDATA\r\nSmuggled\r\n"


@pytest.mark.parametrize(
    "fake_end",
    [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n", b"\n.\r\r\n"],
    ids=["LF.LF", "CRLF.LF", "LF.CRLF", "CR.CR", "CRLF.CR", "CR.CRLF", "LF.CRCRLF"],
)
def test_smuggling_payload_never_yields_second_envelope(fake_end: bytes) -> None:
    """A fake end of data plus a smuggled MAIL FROM: one refused message (550 5.5.2), no second."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            reply = await transaction(client, b"Subject: x\r\n\r\nHello" + fake_end + SMUGGLED)
            assert (reply.code, reply.enhanced) == (550, "5.5.2")
            assert (await client.cmd("NOOP")).code == 250  # nothing else was queued for us
            assert srv.policy.accepted == []
            assert [sender for _, sender in srv.policy.mails] == ["alice@src.example"]
            await client.close()

    run(scenario)


@pytest.mark.parametrize(
    "body",
    [
        b"Subject: lf\n\nbare LF line endings\n",
        b"Subject: x\r\n\r\none bare\nLF\r\n",
        b"Subject: x\r\n\r\none bare\rCR\r\n",
        b"Subject: x\r\n\r\ntrailing CR\r\r\n",
        b"Subject: x\r\n\r\n" + b"y" * 2000 + b"\nlong line with a bare LF\r\n",
    ],
    ids=["all-LF", "bare-LF", "bare-CR", "CR-CRLF", "bare-LF-in-long-line"],
)
def test_data_bare_newline_is_refused(body: bytes) -> None:
    """A bare CR or LF anywhere in DATA refuses the message with 550 5.5.2; the session goes on."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            reply = await transaction(client, body)
            assert (reply.code, reply.enhanced) == (550, "5.5.2")
            assert srv.policy.accepted == []
            assert (await transaction(client, MESSAGE)).code == 250
            await client.close()

    run(scenario)


def test_command_bare_newline_is_refused() -> None:
    """Command lines ending in a bare LF, or holding a bare CR, are refused with 500 5.5.2."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            await client.send(b"NOOP\nMAIL FROM:<a@src.example>\rRCPT TO:<b@dest.example>\r\n")
            first, second = await client.replies(2)
            assert [(first.code, first.enhanced), (second.code, second.enhanced)] == [
                (500, "5.5.2"),
                (500, "5.5.2"),
            ]
            assert srv.policy.mails == []
            assert (await client.cmd("NOOP")).code == 250
            await client.close()

    run(scenario)


# -- limits -----------------------------------------------------------------------------------


def test_message_oversize_is_refused_with_552() -> None:
    """A message over the size limit gets 552 5.3.4 after its end, and is not accepted."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            body = MESSAGE + (b"z" * 98 + b"\r\n") * 250  # 25,000 > 20,000 octets
            reply = await transaction(client, body)
            assert (reply.code, reply.enhanced) == (552, "5.3.4")
            assert srv.policy.accepted == []
            assert (await client.cmd("RSET")).code == 250
            await client.close()

    run(scenario)


def test_mail_size_parameter_over_limit_is_refused_with_552() -> None:
    """MAIL FROM with SIZE= above the limit gets 552 5.3.4 at once."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            response = await client.cmd("MAIL FROM:<a@src.example> SIZE=20001")
            assert (response.code, response.enhanced) == (552, "5.3.4")
            assert (await client.cmd("MAIL FROM:<a@src.example> SIZE=20000")).code == 250
            await client.close()

    run(scenario)


def _disk_with(free: int) -> Callable[[Path], os.statvfs_result]:
    """statvfs of a file system with `free` bytes available (4 KiB blocks)."""
    return lambda _: os.statvfs_result((4096, 4096, 1 << 20, 0, free // 4096, 0, 0, 0, 0, 255))


def test_mail_without_room_above_the_reserve_gets_452_4_3_1() -> None:
    """Free space below the reserve: MAIL gets 452 4.3.1 (never tarpitted, the session goes
    on); with room, a declared SIZE must fit above the reserve."""

    async def scenario() -> None:
        full = FreeSpace(Path("/data"), 1_000_000, statvfs=_disk_with(999_424))
        async with serving(space=full) as srv:
            client = await srv.session()
            for _ in range(TEST_LIMITS.error_limit + 2):  # more than the error limit
                response = await client.cmd("MAIL FROM:<a@src.example>")
                assert response.lines == ["452 4.3.1 Insufficient system storage"]
            assert (await client.cmd("NOOP")).code == 250  # still talking, not tarpitted
            await client.close()
        roomy = FreeSpace(Path("/data"), 1_000_000, statvfs=_disk_with(245 * 4096))  # 3,520 above
        async with serving(space=roomy) as srv:
            client = await srv.session()
            too_big = await client.cmd("MAIL FROM:<a@src.example> SIZE=3521")
            assert (too_big.code, too_big.enhanced) == (452, "4.3.1")
            assert (await client.cmd("MAIL FROM:<a@src.example> SIZE=3520")).code == 250
            await client.close()

    run(scenario)


def test_rcpt_over_limit_gets_452_and_message_keeps_the_rest() -> None:
    """Recipients beyond the limit get 452 4.5.3; the message goes to the ones accepted."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            rcpts = tuple(f"r{i}@dest.example" for i in range(5))
            commands = ["MAIL FROM:<a@src.example>"] + [f"RCPT TO:<{r}>" for r in rcpts]
            await client.send(("\r\n".join(commands) + "\r\n").encode())
            replies = await client.replies(6)
            assert [(r.code, r.enhanced) for r in replies[1:]] == [
                (250, "2.1.5"),
                (250, "2.1.5"),
                (250, "2.1.5"),
                (452, "4.5.3"),
                (452, "4.5.3"),
            ]
            assert (await client.cmd("DATA")).code == 354
            await client.send(MESSAGE + b".\r\n")
            assert (await client.reply()).code == 250
            envelope = srv.policy.accepted[0][0]
            assert [r.address for r in envelope.recipients] == list(rcpts[:3])
            await client.close()

    run(scenario)


def test_command_line_too_long_is_refused() -> None:
    """A command over 512 octets, or over the reader's limit, gets 500 5.5.2; the session goes on."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            just_fits = await client.cmd("NOOP " + "x" * (512 - 7))
            assert just_fits.code == 250
            long_ = await client.cmd("NOOP " + "x" * (512 - 6))
            assert (long_.code, long_.enhanced) == (500, "5.5.2")
            huge = await client.cmd("NOOP " + "x" * 20_000)
            assert (huge.code, huge.enhanced) == (500, "5.5.2")
            orcpt = "ORCPT=rfc822;" + "o" * 400 + "@dest.example"  # RFC 3461 allowance
            assert (await client.cmd("MAIL FROM:<a@src.example>")).code == 250
            assert (await client.cmd(f"RCPT TO:<b@dest.example> {orcpt}")).code == 250
            assert (await client.cmd("NOOP")).code == 250
            await client.close()

    run(scenario)


def test_data_line_too_long_is_refused_with_500_5_5_0() -> None:
    """A DATA line over 1000 octets (CRLF included, after unstuffing) refuses the message."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            fits = b"." + b"d" * 997 + b"\r\n"  # dot-stuffed: 998 + CRLF = 1000 after unstuffing
            assert (await transaction(client, MESSAGE + fits + b"e" * 998)).code == 250
            for overlong in (b"f" * 999, b"g" * 5000):
                reply = await transaction(client, MESSAGE + overlong)
                assert (reply.code, reply.enhanced) == (500, "5.5.0")
            assert len(srv.policy.accepted) == 1
            await client.close()

    run(scenario)


def test_connection_limit_per_client_gets_421() -> None:
    """Beyond connections_per_client the client gets 421 4.7.0 and is closed; a slot frees on close."""

    async def scenario() -> None:
        limits = limits_with(connections_per_client=2)
        async with serving(limits=limits) as srv:
            first = await srv.connect(source="127.0.0.71")
            second = await srv.connect(source="127.0.0.71")
            third = await srv.connect(source="127.0.0.71", greet=False)
            refusal = await third.reply()
            assert (refusal.code, refusal.enhanced) == (421, "4.7.0")
            assert await third.at_eof()
            other = await srv.connect(source="127.0.0.72")  # another client is not affected
            assert (await first.cmd("QUIT")).code == 221
            assert await first.at_eof()
            await asyncio.sleep(0.05)
            again = await srv.connect(source="127.0.0.71")
            for client in (second, other, again):
                await client.close()

    run(scenario)


def test_connection_limit_total_gets_421() -> None:
    """Beyond connections_total any client gets 421 4.7.0."""

    async def scenario() -> None:
        limits = limits_with(connections_total=3)
        async with serving(limits=limits) as srv:
            open_ = [await srv.connect(source=f"127.0.0.{80 + i}") for i in range(3)]
            late = await srv.connect(source="127.0.0.90", greet=False)
            refusal = await late.reply()
            assert (refusal.code, refusal.enhanced) == (421, "4.7.0")
            assert await late.at_eof()
            for client in open_:
                await client.close()

    run(scenario)


def test_error_limit_closes_with_421() -> None:
    """At error_limit errors the server answers 421 4.7.0 and closes the connection."""

    async def scenario() -> None:
        limits = limits_with(error_limit=4)
        async with serving(limits=limits) as srv:
            client = await srv.session()
            await client.send(b"FROB\r\n" * 6)
            replies = await client.replies(5)
            assert [r.code for r in replies] == [500, 500, 500, 500, 421]
            assert replies[-1].enhanced == "4.7.0"
            assert await client.at_eof()

    run(scenario)


def test_error_tarpit_delays_replies_after_a_few_errors() -> None:
    """After tarpit_after errors each further error reply waits error_delay; good replies do not."""

    async def scenario() -> None:
        limits = limits_with(error_delay=0.3)
        async with serving(limits=limits, tarpit_after=2) as srv:
            client = await srv.session()
            started = time.monotonic()
            for _ in range(2):
                assert (await client.cmd("FROB")).code == 500
            assert time.monotonic() - started < 0.25
            started = time.monotonic()
            assert (await client.cmd("FROB")).code == 500
            assert time.monotonic() - started >= 0.28
            started = time.monotonic()
            assert (await client.cmd("NOOP")).code == 250
            assert time.monotonic() - started < 0.25
            await client.close()

    run(scenario)


def test_idle_timeout_closes_connection() -> None:
    """A client silent for longer than the timeout is disconnected."""

    async def scenario() -> None:
        limits = limits_with(timeout=0.3)
        async with serving(limits=limits) as srv:
            client = await srv.session()
            started = time.monotonic()
            assert await client.at_eof(wait=3)
            assert time.monotonic() - started < 2

    run(scenario)


@pytest.mark.parametrize(
    "pieces",
    [
        [b"Subject: x\r\n\r\n..dots\r\nend.\r\n.\r\nNOOP\r\n"],
        [b"Subject: x\r\n\r\n..dots\r", b"\nend.", b"\r\n.", b"\r", b"\nNOOP\r\n"],
        [b"Subject: x\r\n\r\n", b"..dots\r\nend.\r\n", b".\r\n", b"NOOP\r\n"],
    ],
    ids=["one-write", "split-crlf-and-end", "split-at-lines"],
)
def test_data_pieces_give_one_exact_message_and_keep_pipelined_commands(
    pieces: list[bytes],
) -> None:
    """However DATA is cut into writes, the message is exact (unstuffed, a line ending in "."
    kept), it ends only at a line that is ".", and a command pipelined after it is answered."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            await client.send(b"MAIL FROM:<a@src.example>\r\nRCPT TO:<b@dest.example>\r\nDATA\r\n")
            assert [r.code for r in await client.replies(3)] == [250, 250, 354]
            for piece in pieces:
                await client.send(piece)
                await asyncio.sleep(0.05)
            assert [r.code for r in await client.replies(2)] == [250, 250]
            _, content, _ = srv.policy.accepted[0]
            assert content.split(b"\r\n", 3)[-1] == b"Subject: x\r\n\r\n.dots\r\nend.\r\n"
            assert len(srv.policy.accepted) == 1
            await client.close()

    run(scenario)


def test_data_empty_message_ends_at_once() -> None:
    """A "." as the first line of DATA is an empty message (only our Received header)."""

    async def scenario() -> None:
        async with serving() as srv:
            client = await srv.session()
            await client.send(b"MAIL FROM:<a@src.example>\r\nRCPT TO:<b@dest.example>\r\nDATA\r\n")
            assert [r.code for r in await client.replies(3)] == [250, 250, 354]
            await client.send(b".\r\n")
            assert (await client.reply()).code == 250
            _, content, _ = srv.policy.accepted[0]
            assert content.startswith(b"Received: ")
            assert content.endswith(b"\r\n")
            assert b"\r\n\r\n" not in content
            await client.close()

    run(scenario)


def test_data_timeout_restarts_while_lines_arrive() -> None:
    """A slow but steady DATA longer than the command timeout is not cut off."""

    async def scenario() -> None:
        limits = limits_with(timeout=0.5, data_timeout=1.5)
        async with serving(limits=limits) as srv:
            client = await srv.session()
            await client.send(b"MAIL FROM:<a@src.example>\r\nRCPT TO:<b@dest.example>\r\nDATA\r\n")
            assert [r.code for r in await client.replies(3)] == [250, 250, 354]
            for _ in range(6):  # 2.4 s in all: longer than both timeouts
                await client.send(b"slow line\r\n")
                await asyncio.sleep(0.4)
            await client.send(b".\r\n")
            assert (await client.reply()).code == 250
            await client.close()

    run(scenario)


# -- STARTTLS ---------------------------------------------------------------------------------


def test_starttls_upgrades_and_received_says_esmtps(tls_pair: TlsPair) -> None:
    """STARTTLS (220 2.0.0) leads to TLS; EHLO then omits STARTTLS and Received says ESMTPS."""

    async def scenario() -> None:
        async with serving(tls_context=tls_pair.server) as srv:
            client = await srv.session()
            ready = await client.cmd("STARTTLS")
            assert (ready.code, ready.enhanced) == (220, "2.0.0")
            await client.start_tls(tls_pair.client)
            needs_ehlo = await client.cmd("MAIL FROM:<a@src.example>")
            assert (needs_ehlo.code, needs_ehlo.enhanced) == (503, "5.5.1")  # RFC 3207 4.2
            ehlo = await client.cmd("EHLO client.example")
            assert "STARTTLS" not in ehlo.text
            again = await client.cmd("STARTTLS")
            assert (again.code, again.enhanced) == (503, "5.5.1")
            assert (await transaction(client, MESSAGE)).code == 250
            _, content, _ = srv.policy.accepted[0]
            assert b"with ESMTPS id" in content.split(b"\r\n\r\n")[0]
            assert b"(using TLSv1.3 with cipher " in content
            assert srv.policy.mails[-1][0].tls is True
            await client.close()

    run(scenario)


def test_starttls_discards_commands_pipelined_before_handshake(tls_pair: TlsPair) -> None:
    """Commands sent in clear after STARTTLS are dropped, not run inside TLS (CVE-2024-34083)."""

    async def scenario() -> None:
        async with serving(tls_context=tls_pair.server) as srv:
            client = await srv.session()
            await client.send(
                b"STARTTLS\r\nNOOP\r\nEHLO injected.example\r\nMAIL FROM:<evil@evil.example>\r\n"
            )
            ready = await client.reply()
            assert (ready.code, ready.enhanced) == (220, "2.0.0")
            await client.start_tls(tls_pair.client)
            first = await client.cmd("HELP")
            assert first.code == 214  # not the 250 of the injected NOOP or EHLO
            mail = await client.cmd("MAIL FROM:<a@src.example>")
            assert (mail.code, mail.enhanced) == (503, "5.5.1")  # injected EHLO never ran
            assert srv.policy.mails == []
            await client.close()

    run(scenario)


def test_starttls_failed_handshake_closes_and_frees_the_slot(tls_pair: TlsPair) -> None:
    """Garbage instead of a TLS handshake closes the connection; the client's slot is freed."""

    async def scenario() -> None:
        limits = limits_with(connections_per_client=1)
        async with serving(limits=limits, tls_context=tls_pair.server) as srv:
            client = await srv.session()
            assert (await client.cmd("STARTTLS")).code == 220
            await client.send(b"THIS IS NOT A TLS CLIENT HELLO\r\n\r\n")
            assert await client.at_eof()
            await asyncio.sleep(0.05)
            again = await srv.session()
            assert (await again.cmd("QUIT")).code == 221
            assert await again.at_eof()

    run(scenario)


def test_connection_slot_freed_after_abrupt_disconnect() -> None:
    """A client vanishing mid-DATA or after the greeting frees its slot; nothing is accepted."""

    async def scenario() -> None:
        limits = limits_with(connections_per_client=1)
        async with serving(limits=limits) as srv:
            client = await srv.session()
            await client.send(b"MAIL FROM:<a@src.example>\r\nRCPT TO:<b@dest.example>\r\nDATA\r\n")
            assert [r.code for r in await client.replies(3)] == [250, 250, 354]
            await client.send(b"Subject: cut\r\n\r\nhalf a line")
            client.writer.transport.abort()
            await asyncio.sleep(0.05)
            greeted = await srv.connect()
            greeted.writer.transport.abort()
            await asyncio.sleep(0.05)
            last = await srv.session()
            assert (await last.cmd("QUIT")).code == 221
            assert await last.at_eof()
            assert srv.policy.accepted == []

    run(scenario)
