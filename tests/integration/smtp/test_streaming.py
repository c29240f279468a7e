"""DATA streamed to a spool file over a real socket: what arrives whole, what is refused.

The engine (`start_smtp_server`) on 127.23.0.10 with a policy that keeps what it is given;
messages over `content.MEMORY_LIMIT` reach it as a handle on a spool file, and the refusals
that hold for small messages (SIZE, bare LF, line length) hold when the message is already
being written to disk, with the session still usable after them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.org import free_port

from sitemail.config.model import LimitsConfig
from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.core.reply import Reply
from sitemail.queue.content import MEMORY_LIMIT, Content
from sitemail.smtp.engine import SessionInfo, start_smtp_server, stop_smtp_server
from sitemail.smtp.spooling import SPILL_LIMIT

HOST = "127.23.0.10"
LIMITS = LimitsConfig(message_size=8 * MEMORY_LIMIT, timeout=10.0, data_timeout=10.0)
LINE = b"0123456789" * 7 + b"abcdef\r\n"  # 78 octets


@dataclass
class KeepingPolicy:
    """Accepts every message; keeps its octets, whether it was in memory, and what the spool
    directory held while it was being accepted."""

    spool_dir: Path
    accepted: list[tuple[bytes, bool, list[Path]]] = field(default_factory=list)

    async def check_connect(self, peer_ip: str) -> Reply | None:
        del peer_ip
        return None

    async def check_mail(self, session: SessionInfo, sender: str) -> Reply:
        del session, sender
        return Reply(250, "2.1.0", "Sender ok")

    async def check_rcpt(self, session: SessionInfo, recipient: EnvelopeRecipient) -> Reply:
        del session, recipient
        return Reply(250, "2.1.5", "Recipient ok")

    def new_queue_id(self) -> str:
        return f"Q{len(self.accepted)}"

    async def accept(self, envelope: Envelope, content: Content, *, queue_id: str) -> Reply:
        del envelope
        octets = await asyncio.to_thread(content.whole)
        files = list(self.spool_dir.iterdir()) if self.spool_dir.is_dir() else []
        self.accepted.append((octets, content.in_memory, files))
        return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")


async def reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    lines = []
    while True:
        line = (await asyncio.wait_for(reader.readline(), 30)).decode()
        lines.append(line.rstrip())
        if line[3:4] != "-":
            return int(line[:3]), "\n".join(lines)


async def transaction(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> tuple[int, str]:
    """MAIL, RCPT, DATA and `body` (no line starts with a dot); the final reply."""
    for command in (b"MAIL FROM:<a@outside.test>", b"RCPT TO:<b@inside.test>", b"DATA"):
        writer.write(command + b"\r\n")
        code, text = await reply(reader)
        assert code in (250, 354), text
    for start in range(0, len(body), 65536):
        writer.write(body[start : start + 65536])
        await writer.drain()
    writer.write(b".\r\n")
    return await reply(reader)


def run_session(tmp_path: Path, bodies: list[bytes]) -> tuple[list[tuple[int, str]], KeepingPolicy]:
    """One connection sending each body in turn; the final replies and the policy."""
    spool_dir = tmp_path / "incoming"
    policy = KeepingPolicy(spool_dir)

    async def scenario() -> list[tuple[int, str]]:
        port = free_port(HOST)
        server = await start_smtp_server(
            HOST, port, policy=policy, server_name="mx.test", limits=LIMITS, spool_dir=spool_dir
        )
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            await reply(reader)
            writer.write(b"EHLO client.test\r\n")
            await reply(reader)
            replies = [await transaction(reader, writer, body) for body in bodies]
            writer.close()
            return replies
        finally:
            stop_smtp_server(server)

    return asyncio.run(scenario()), policy


def lines(size: int) -> bytes:
    return b"Subject: big\r\n\r\n" + LINE * (size // len(LINE))


def test_streaming_big_message_arrives_byte_identical_from_a_nameless_file(
    tmp_path: Path,
) -> None:
    """Messages of 5 MiB and 512 KiB reach the policy as handles (not in memory) whose
    octets are exactly those sent after our Received header; a small one stays in memory;
    the spool file never has a name."""
    bodies = [lines(5 * MEMORY_LIMIT), lines(2 * SPILL_LIMIT), lines(1000)]
    replies, policy = run_session(tmp_path, bodies)
    assert [code for code, _ in replies] == [250, 250, 250]
    assert [in_memory for _, in_memory, _ in policy.accepted] == [False, False, True]
    for (octets, _, files), body in zip(policy.accepted, bodies, strict=True):
        assert octets.startswith(b"Received: from client.test")
        assert octets.endswith(body)
        assert files == []
    assert list((tmp_path / "incoming").iterdir()) == []


def test_streaming_size_limit_refuses_a_message_already_on_disk(tmp_path: Path) -> None:
    """Over message_size while being spooled: 552 5.3.4, nothing accepted, the session goes on."""
    replies, policy = run_session(tmp_path, [lines(9 * MEMORY_LIMIT), lines(1000)])
    assert replies[0][0] == 552
    assert "5.3.4" in replies[0][1]
    assert replies[1][0] == 250
    assert len(policy.accepted) == 1


def test_streaming_bare_lf_after_the_spill_refuses_the_message(tmp_path: Path) -> None:
    """A bare LF 3 MiB into the message (already spooled): 550 5.5.2, nothing accepted."""
    body = lines(3 * MEMORY_LIMIT) + b"smuggled\n.\nMAIL FROM:<x@y>\r\n" + LINE * 10
    replies, policy = run_session(tmp_path, [body, lines(1000)])
    assert replies[0][0] == 550
    assert "5.5.2" in replies[0][1]
    assert replies[1][0] == 250
    assert len(policy.accepted) == 1


def test_streaming_long_line_after_the_spill_refuses_the_message(tmp_path: Path) -> None:
    """A line over 1,000 octets 3 MiB into the message: 500 5.5.0, nothing accepted."""
    body = lines(3 * MEMORY_LIMIT) + b"y" * 5000 + b"\r\n" + LINE * 10
    replies, policy = run_session(tmp_path, [body, lines(1000)])
    assert replies[0][0] == 500
    assert "5.5.0" in replies[0][1]
    assert replies[1][0] == 250
    assert len(policy.accepted) == 1


def test_streaming_spool_write_failure_answers_452_and_the_session_goes_on(
    tmp_path: Path,
) -> None:
    """A spool directory that cannot be written: 452 4.3.1 for a big message (the client
    retries later), small messages still accepted on the same connection."""
    (tmp_path / "incoming").write_bytes(b"a file where the directory should be")
    replies, policy = run_session(tmp_path, [lines(2 * MEMORY_LIMIT), lines(1000)])
    assert replies[0][0] == 452
    assert "4.3.1" in replies[0][1]
    assert replies[1][0] == 250
    assert len(policy.accepted) == 1
