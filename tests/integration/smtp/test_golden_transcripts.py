"""SMTP sessions against golden transcripts: every reply a real server gives, line for line.

Each file in tests/golden/smtp/ is one session, written as the client's lines and the
server's replies in order:

    C: EHLO client.test          a line the client sends (CRLF appended)
    C~ DATA\\r\\nbody\\n.\\n     raw bytes with Python escapes, nothing appended (smuggling)
    S: 250-sitea.example.com     a reply line the server must send, byte for byte
    # ...                        a comment

After each `C:` line the runner reads one whole reply (up to the line "NNN "), except between
a 354 and the lone "." that ends the data, as a client does. After a `C~` line it reads as many
replies as the file lists before the next client line. Replies are compared after replacing
what changes from run to run (queue ids) with a fixed token. A session that ends with "S: EOF"
expects the server to close the connection.

One real `sitemail serve` (SMTP only) serves every file. `SITEMAIL_UPDATE_GOLDEN=1` rewrites
the files from what the server answered: review the diff, it is a change of the protocol.
"""

from __future__ import annotations

import codecs
import os
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.clientsite import client_tls
from tests.support.processes import SITEMAIL, SMTP_ONLY, ServeProcess, configure, free_port

from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind

pytestmark = pytest.mark.skipif(not SITEMAIL.exists(), reason="console script not installed")

HOST = "127.39.0.1"
GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "smtp"
UPDATE = os.environ.get("SITEMAIL_UPDATE_GOLDEN") == "1"
QUEUE_ID = re.compile(r"queued as [0-9A-Za-z]+")


def normalised(line: str) -> str:
    """A reply line with what differs between runs replaced by fixed tokens."""
    return QUEUE_ID.sub("queued as <QUEUE-ID>", line)


@dataclass(frozen=True)
class Step:
    """One line of a transcript: who speaks ("C", "C~", "S") and what."""

    who: str
    text: str

    @property
    def wire(self) -> bytes:
        """The bytes a client step sends."""
        if self.who == "C~":
            return codecs.decode(self.text, "unicode_escape").encode("latin-1")
        return self.text.encode("utf-8") + b"\r\n"


def parse_transcript(path: Path) -> list[Step]:
    steps = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw or raw.startswith("#"):
            continue
        who, sep, text = raw.partition(" ")
        assert who in ("C:", "C~", "S:"), f"{path.name}:{number}: bad line {raw!r}"
        assert sep, f"{path.name}:{number}: no text after {who!r}"
        steps.append(Step(who.rstrip(":"), text))
    return steps


class Session:
    """A raw client: reads whole replies, can switch to TLS after STARTTLS."""

    def __init__(self, port: int) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (HOST, port), timeout=15
        )
        self.buffer = b""

    def line(self) -> str:
        while b"\r\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return "EOF"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line.decode("utf-8", "replace")

    def reply(self) -> list[str]:
        """One whole reply: its lines up to the one with a space after the code."""
        lines = [self.line()]
        while lines[-1] != "EOF" and lines[-1][3:4] == "-":
            lines.append(self.line())
        return lines

    def start_tls(self) -> None:
        assert self.buffer == b"", self.buffer
        self.sock = client_tls().wrap_socket(self.sock)

    def close(self) -> None:
        self.sock.close()


def replay(steps: list[Step], port: int) -> list[Step]:
    """Play the client's side of `steps`; the transcript the server actually gave."""
    session = Session(port)
    heard: list[Step] = []
    try:
        expected_replies = _replies_after_each_client_step(steps)
        heard += [Step("S", line) for line in session.reply()]  # the greeting
        in_data = False
        for step, replies in expected_replies:
            heard.append(step)
            try:
                session.sock.sendall(step.wire)
            except OSError:  # the server closed the connection (error limit, 421)
                heard.append(Step("S", "EOF"))
                return heard
            if step.who == "C" and in_data:
                in_data = step.text != "."
                if in_data:
                    continue
            count = 1 if step.who == "C" else replies
            for _ in range(count):
                reply = session.reply()
                heard += [Step("S", normalised(line)) for line in reply]
                in_data = reply[-1].startswith("354")
                if step.text.upper() == "STARTTLS" and reply[-1].startswith("220"):
                    session.start_tls()
                if reply == ["EOF"]:
                    return heard
    finally:
        session.close()
    return heard


def _replies_after_each_client_step(steps: list[Step]) -> list[tuple[Step, int]]:
    """Each client step with the number of replies (not lines) the file lists after it."""
    paired: list[tuple[Step, int]] = []
    for step in steps[_greeting_length(steps) :]:
        if step.who != "S":
            paired.append((step, 0))
        elif paired and (step.text == "EOF" or step.text[3:4] == " "):
            client, count = paired[-1]
            paired[-1] = (client, count + 1)
    return paired


def _greeting_length(steps: list[Step]) -> int:
    for index, step in enumerate(steps):
        if step.who != "S":
            return index
    return len(steps)


def render(steps: list[Step], header: list[str]) -> str:
    body = [f"{'C~' if s.who == 'C~' else s.who + ':'} {s.text}" for s in steps]
    return "\n".join([*header, *body]) + "\n"


def transcripts() -> list[Path]:
    return sorted(GOLDEN.glob("*.txt"))


@pytest.fixture(scope="module")
def smtp_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    base = tmp_path_factory.mktemp("golden-smtp")
    data_dir = base / "SiteA"
    service = AdminService.init(
        data_dir,
        org="ExchangeORG",
        site="SiteA",
        server="ServerA",
        domain="sitea.example.com",
        listen=[HOST],
    )
    try:
        for alias in ("jsmith", "mjones", "kbrown", "lwhite"):
            service.add_recipient(ObjectKind.MAILBOX, alias, display_name=alias)
    finally:
        service.close()
    port = free_port(HOST)
    configure(
        data_dir,
        {
            "smtp": f"port = {port}",
            "limits": "message_size = 10000\nrecipients = 3",
            **SMTP_ONLY,
        },
    )
    server = ServeProcess(data_dir, base)
    server.start()
    try:
        yield port
    finally:
        server.stop()
        server.cleanup()


@pytest.mark.parametrize("path", transcripts(), ids=lambda p: p.stem)
def test_smtp_session_matches_its_golden_transcript(path: Path, smtp_port: int) -> None:
    """The server's replies to a scripted session are exactly those of the golden file."""
    steps = parse_transcript(path)
    heard = replay(steps, smtp_port)
    if UPDATE:
        header = [line for line in path.read_text().splitlines() if line.startswith("#")]
        path.write_text(render(heard, header), encoding="utf-8")
        pytest.skip(f"{path.name} rewritten from the server's replies: review the diff")
    assert render(heard, []) == render(steps, [])


def test_golden_transcripts_exist() -> None:
    """The golden directory is not empty (a glob that finds nothing would test nothing)."""
    assert len(transcripts()) >= 8
