"""The SMTP protocol engine: aiosmtpd underneath, sitemail's rules on top.

One job: speak ESMTP (RFC 5321) on one listening address and turn each step into a question for
the policy (`SmtpPolicy`), whose typed `Reply` we send. Collaborators: the policy (MAIL/RCPT
decisions, durable acceptance and queue ids), `LimitsConfig`, an optional `ssl.SSLContext`.

Invariants:
- Every 2xx/4xx/5xx reply carries an enhanced status code (RFC 2034/3463), except the ones
  RFC 2034 section 3 exempts: the 220 greeting and the 250 answering HELO/EHLO (whose first
  line is the host name and whose other lines are the EHLO keywords). 354 is intermediate.
- "250 ... queued as <id>" after DATA is sent only after the acceptor returned it, i.e. after
  the message is durable. If the acceptor raises, the answer is 451 4.3.0 and the client keeps
  the message; nothing is half-accepted by us.
- A message with a bare CR or bare LF anywhere is refused whole (550 5.5.2, like Postfix's
  `smtpd_forbid_bare_newline`); DATA ends only at CRLF "." CRLF. So smuggling payloads
  (`\\n.\\n`, `\\r\\n.\\r` + `MAIL FROM` ...) never yield a second envelope: they are inside
  the one message, which is refused. Command lines with a bare CR or LF are refused too.
- Commands pipelined after STARTTLS are discarded (CVE-2024-34083; aiosmtpd 1.4.6 flushes the
  plaintext buffer when the TLS transport comes up in `connection_made`).
- No exception text or traceback ever reaches a client: unexpected faults answer 451 4.3.0.

What comes from aiosmtpd 1.4.6 (pinned: we use its private parts): the asyncio protocol and
stream plumbing, the inactivity timer, and the STARTTLS transport switch with its buffer flush.
What we replace: the command loop (`_handle_client`) and every command. Its hooks could not do
the job: bare LF is accepted in command lines before any hook runs, DSN parameters are refused
with 555 before any hook runs, its built-in replies lack enhanced codes, and DATA cannot see
bare CRs per line or count sizes after dot-unstuffing.

Design choices:
- Received header and queue id: the policy pre-allocates the queue id (`new_queue_id()`) when
  DATA ends; we prepend a Received header (RFC 5321 section 4.4) naming it, and pass the same id
  to `accept(..., queue_id=...)`, which must store the message under that id. So the header,
  the 250 reply and the queue agree, and the content handed over is final.
- A DATA line longer than `line_length` (CRLF included, after dot-unstuffing) refuses the
  message with `500 5.5.0 Line too long`, the reply RFC 5321 section 4.5.3.1.9 lists. We do
  not wrap long lines as Postfix does: rewrapping changes content (breaks DKIM) and a line over 998
  octets is invalid RFC 5322 anyway (we do not offer BINARYMIME).
- Command length: `command_length` (512, CRLF included) for every command; MAIL and RCPT in
  an EHLO session get the extension allowances of RFC 1870/3461/6531/4954 on top.
  Over-long: `500 5.5.2 Line too long`.
- DATA is never held whole: a message beyond `smtp.spooling.SPILL_LIMIT` goes to a spool file
  as it arrives (smtp/spooling.py), and the policy gets a `Content` handle (with our Received
  header as its prefix) that reads it in chunks. The checks above run on each piece as it
  comes, so a refusal (bare newline, long line, size) stops the writing at once; a spool file
  that cannot be written (disk full) makes the answer 452 4.3.1 once DATA has ended.
- Timeouts: `timeout` between commands; during DATA and while the acceptor works,
  `data_timeout`, restarted at most once a second while lines keep arriving (aiosmtpd itself
  never restarts its timer during DATA). A timeout is answered `421 4.4.2` before the close.
- Free space: with a `FreeSpace` (the data dir's file system, a reserve), MAIL answers
  `452 4.3.1 Insufficient system storage` when the free space is below the reserve or a
  declared SIZE does not fit above it (Postfix's queue_minfree), before any data is sent.
- Connection limits: counted in the protocol factory (aiosmtpd has none); over the limit the
  client gets `421 4.7.0` instead of the greeting, and the connection is closed. Near the
  total limit (stress, as Postfix's): sessions outside a transaction get `stress_timeout`,
  addresses holding many get no more, and a full house gives the slot of a long-idle session
  to a client holding few (`ConnectionLimiter`, `SmtpSession._make_room`).
- Stopping: `stop_smtp_server` answers 421 to every session except one storing a message,
  which sends its reply first (`drain_smtp_server` waits for it); after the stop nothing is
  stored, so a 4xx after DATA always means "not stored" and the client's retry is no copy.
- Error tarpit: every 4xx/5xx reply counts as an error except 452 4.5.3 (a client sending more
  recipients than allowed is not misbehaving), 452 4.3.1 (our disk is full, not its fault)
  and 421. After `tarpit_after` errors (default:
  half of `error_limit`) each further error reply is delayed by `error_delay` (Exchange's
  tarpit; well-behaved replies are never slowed). At `error_limit` errors: `421 4.7.0`, close.
- Replies to pipelined commands are written in one batch when the client's input runs dry
  (RFC 2920 section 3.2 allows it), saving system calls.
- AUTH (RFC 4954, PLAIN and LOGIN) exists only on listeners given an authenticator (submission,
  smtp/submission.py), and only over TLS: before it `AUTH` answers 538 5.7.11 and EHLO does not
  offer it. On the MX listener `AUTH` answers 502 5.5.1. A listener with `auth_required` answers
  MAIL with 530 5.7.0 until the client has authenticated. Implicit-TLS listeners (465) count
  as TLS from the first byte.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import logging
import re
import ssl
import weakref
from asyncio import sslproto
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Final, Protocol, cast

from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as AiosmtpdEnvelope

from sitemail.config.model import LimitsConfig
from sitemail.core.address import parse_address
from sitemail.core.clock import Clock, SystemClock
from sitemail.core.connections import ConnectionCounter
from sitemail.core.envelope import BodyType, Envelope, EnvelopeRecipient, Notify, Ret
from sitemail.core.errors import InvalidAddressError
from sitemail.core.events import AuthFailed, SmtpConnected, emit
from sitemail.core.reply import Reply
from sitemail.directory.auth import Authenticator, AuthOutcome, AuthResult
from sitemail.queue.content import Content
from sitemail.smtp.spooling import BodySink
from sitemail.store.space import FreeSpace

__all__ = [
    "ConnectionLimiter",
    "MailParams",
    "SessionInfo",
    "SmtpPolicy",
    "SmtpSession",
    "decode_xtext",
    "drain_smtp_server",
    "encode_xtext",
    "parse_mail_params",
    "parse_rcpt_params",
    "received_header",
    "split_path",
    "start_smtp_server",
    "stop_smtp_server",
]

log = logging.getLogger("sitemail.smtp")

# RFC 5321 4.5.3.1.4 is 512 octets for a command line; extensions add to MAIL and RCPT:
# SIZE +26 (RFC 1870), BODY=8BITMIME +14, SMTPUTF8 +10 (RFC 6531), RET/ENVID +100 and
# NOTIFY/ORCPT +500 (RFC 3461 section 5), AUTH= +500 (RFC 4954 section 5).
_ESMTP_ALLOWANCE: Final = {"MAIL": 26 + 14 + 10 + 100 + 500, "RCPT": 500, "AUTH": 12288 - 512}
_AUTH_LINE: Final = 12288  # RFC 4954 section 4: an AUTH command or response line, at most
_MAX_ENVID: Final = 100  # RFC 3461 section 4.4
_MAX_ORCPT: Final = 500  # RFC 3461 section 4.2
_DATA_TIMER_GRANULARITY: Final = 1.0  # seconds between restarts of the DATA timer
_STRESS: Final = 0.8  # share of `connections_total` open from which the listener is stressed
# Connections the kernel completes before we accept them (asyncio's default, 100, drops the
# handshakes of a burst of a few hundred clients: each then waits 1, 2, 4... s to retry).
_BACKLOG: Final = 1024
_REFUSALS_LOGGED_EVERY: Final = 10.0  # seconds between log lines about refused connections
_EVICT_AFTER: Final = 0.2  # of stress_timeout: idle this long, a session may lose its slot
# The reader's limit: the longest command line or "." CRLF-free run of DATA buffered whole,
# and (asyncio pauses reading at twice it) the flow-control window. Line limits are ours to
# check; a window of one line would stop and restart reading every few lines of a message.
_READ_LIMIT: Final = 64 * 1024

_OK: Final = Reply(250, "2.0.0", "Ok")
_BAD_SEQUENCE_HELO: Final = Reply(503, "5.5.1", "Error: send HELO/EHLO first")
_LINE_TOO_LONG_COMMAND: Final = Reply(500, "5.5.2", "Error: line too long")
_BARE_NEWLINE_COMMAND: Final = Reply(
    500, "5.5.2", "Error: bare <CR> or <LF> received; lines must end in <CR><LF>"
)
_BARE_NEWLINE_DATA: Final = Reply(
    550,
    "5.5.2",
    "Message refused: bare <CR> or <LF> received; lines must end in <CR><LF> "
    "(RFC 5321 section 2.3.8)",
)
_NO_STORAGE: Final = Reply(452, "4.3.1", "Insufficient system storage")
_INTERNAL_ERROR: Final = Reply(451, "4.3.0", "Error: local error in processing, try again later")
_SPOOL_FAILED: Final = Reply(
    452, "4.3.1", "Error: insufficient system storage to spool the message; try again later"
)
_TIMEOUT: Final = Reply(421, "4.4.2", "Error: timeout exceeded")
_EVICTED: Final = Reply(421, "4.7.0", "Error: idle connection closed, the server is busy")
_ACCEPT_FAILED: Final = Reply(
    451, "4.3.0", "Error: message not accepted, queue write failed; try again later"
)


# ---------------------------------------------------------------------------------------------
# Values exchanged with the policy


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What the policy may know about the client at MAIL and RCPT time."""

    peer_ip: str
    helo: str
    tls: bool
    authenticated_user: str = ""  # the mailbox's guid after AUTH, else ""
    addresses: frozenset[str] = frozenset()  # lower-case addresses the user may send as


class SmtpPolicy(Protocol):
    """The policy seam (DESIGN.md 5.3): each SMTP step answered with a typed `Reply`."""

    async def check_connect(self, peer_ip: str) -> Reply | None:
        """None to greet the client; a Reply (421/554) to refuse the connection with it."""
        ...

    async def check_mail(self, session: SessionInfo, sender: str) -> Reply:
        """Decide MAIL FROM; `sender` is "" for the null reverse-path. 2xx accepts."""
        ...

    async def check_rcpt(self, session: SessionInfo, recipient: EnvelopeRecipient) -> Reply:
        """Decide one RCPT TO (address validated, DSN parameters parsed). 2xx accepts."""
        ...

    def new_queue_id(self) -> str:
        """A fresh, unused queue id; the Received header names it before `accept` runs."""
        ...

    async def accept(self, envelope: Envelope, content: Content, *, queue_id: str) -> Reply:
        """Store the message durably under `queue_id`, then return `250 2.0.0 Ok: queued as
        <queue_id>`. Raising means "not stored": the client hears 451 4.3.0 and retries.
        A big `content` is behind a spool file that is closed once this returns."""
        ...


# ---------------------------------------------------------------------------------------------
# Pure helpers (unit-tested): xtext, paths, parameters, the Received header

_XTEXT: Final = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-Fa-f]{2})*")
_XTEXT_HEX: Final = re.compile(r"\+([0-9A-Fa-f]{2})")
_UNICODE_ESCAPE: Final = re.compile(r"\\x\{([0-9A-Fa-f]{2,6})\}")
_ATOM: Final = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_KEYWORD: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def decode_xtext(text: str) -> str:
    """Decode RFC 3461 xtext ("+" HEX HEX for special octets); ValueError if malformed.

    The decoded octets must be UTF-8; lower-case hex is tolerated.
    """
    if not _XTEXT.fullmatch(text):
        raise ValueError(f"malformed xtext: {text!r}")
    if "+" not in text:
        return text
    raw = bytearray()
    pos = 0
    for match in _XTEXT_HEX.finditer(text):
        raw += text[pos : match.start()].encode("ascii")
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += text[pos:].encode("ascii")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"xtext does not decode to UTF-8: {text!r}") from exc


def encode_xtext(text: str) -> str:
    """Encode text as RFC 3461 xtext: "+", "=", controls, space and non-ASCII become +XX."""
    out: list[str] = []
    for char in text:
        if "!" <= char <= "~" and char not in "+=":
            out.append(char)
        else:
            out.extend(f"+{octet:02X}" for octet in char.encode("utf-8"))
    return "".join(out)


def split_path(arg: str) -> tuple[str, list[str]] | None:
    """Split "<path> params..." (after FROM:/TO:) into the path and its parameters.

    Angle brackets are expected; quoted local parts may contain ">" and spaces. Without
    brackets the first word is the path (lenient, like Postfix). None if malformed.
    """
    text = arg.lstrip(" \t")
    if not text.startswith("<"):
        words = text.split()
        if not words:
            return None
        return words[0], words[1:]
    in_quotes = False
    escaped = False
    for index in range(1, len(text)):
        char = text[index]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == ">" and not in_quotes:
            rest = text[index + 1 :]
            if rest and not rest[0].isspace():
                return None
            return text[1:index], rest.split()
    return None


def _split_params(params: Sequence[str]) -> dict[str, str | None] | Reply:
    """KEY[=VALUE] words into a dict keyed by upper-case keyword; values keep their case."""
    result: dict[str, str | None] = {}
    for word in params:
        key, eq, value = word.partition("=")
        if not _KEYWORD.fullmatch(key) or (eq and not value):
            return Reply(501, "5.5.4", f"Syntax error in parameter {word!r}")
        name = key.upper()
        if name in result:
            return Reply(501, "5.5.4", f"Duplicate parameter {name}")
        result[name] = value if eq else None
    return result


@dataclass(frozen=True, slots=True)
class MailParams:
    """MAIL FROM parameters we understand (RFC 1870, 6152, 6531, 3461)."""

    size: int | None = None
    body: BodyType = BodyType.SEVEN_BIT
    smtputf8: bool = False
    ret: Ret | None = None
    envid: str = ""


def _mail_param(name: str, value: str | None, size_limit: int) -> tuple[str, Any] | Reply:
    """One MAIL parameter -> (MailParams field, value), or the Reply refusing it."""
    if name == "SIZE":
        if value is None or not value.isascii() or not value.isdigit() or len(value) > 20:
            return Reply(501, "5.5.4", "Syntax error in SIZE parameter")
        if int(value) > size_limit:
            return Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
        return "size", int(value)
    if name == "BODY":
        try:
            return "body", BodyType((value or "").upper())
        except ValueError:
            return Reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
    if name == "SMTPUTF8":
        if value is not None:
            return Reply(501, "5.5.4", "SMTPUTF8 takes no value")
        return "smtputf8", True
    if name == "RET":
        try:
            return "ret", Ret((value or "").upper())
        except ValueError:
            return Reply(501, "5.5.4", "RET must be FULL or HDRS")
    if name == "ENVID":
        decoded = _decode_printable(value)
        if decoded is None or len(decoded) > _MAX_ENVID or not decoded.isascii():
            return Reply(501, "5.5.4", "Malformed ENVID parameter (xtext, at most 100)")
        return "envid", decoded
    return Reply(555, "5.5.4", f"MAIL parameter {name} not recognized")


def parse_mail_params(params: Sequence[str], *, size_limit: int) -> MailParams | Reply:
    """Parse MAIL FROM parameters; a Reply (501/552/555) when one is invalid or unknown."""
    split = _split_params(params)
    if isinstance(split, Reply):
        return split
    fields: dict[str, Any] = {}  # field name -> value, each typed by _mail_param
    for name, value in split.items():
        if name == "AUTH":
            continue  # RFC 4954 section 5: accepted and ignored until AUTH is offered
        parsed = _mail_param(name, value, size_limit)
        if isinstance(parsed, Reply):
            return parsed
        fields[parsed[0]] = parsed[1]
    return replace(MailParams(), **fields)


def _decode_printable(value: str | None) -> str | None:
    """xtext-decode; None if malformed or if it decodes to control characters."""
    if value is None:
        return None
    try:
        decoded = decode_xtext(value)
    except ValueError:
        return None
    if _CONTROL.search(decoded):
        return None  # a CR/LF here would later be injected into a DSN's headers
    return decoded


def _parse_orcpt(value: str | None) -> str | None:
    """ORCPT=addr-type;xtext -> "addr-type;decoded" (both as sent), or None if malformed."""
    if value is None:
        return None
    addr_type, sep, encoded = value.partition(";")
    if not sep or not encoded or not _ATOM.fullmatch(addr_type):
        return None
    if addr_type.lower() == "utf-8":
        # RFC 6533 utf-8-addr-xtext/unitext: raw UTF-8 (SMTPUTF8) or \x{HEX} escapes.
        ascii_part = "".join(c if c.isascii() else encode_xtext(c) for c in encoded)
        decoded = _decode_printable(ascii_part)
        if decoded is not None:
            try:
                decoded = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), decoded)
            except (ValueError, OverflowError):
                return None
    else:
        decoded = _decode_printable(encoded)
    if not decoded or len(decoded) > _MAX_ORCPT or _CONTROL.search(decoded):
        return None
    return f"{addr_type};{decoded}"


def parse_rcpt_params(address: str, params: Sequence[str]) -> EnvelopeRecipient | Reply:
    """Parse RCPT TO parameters (RFC 3461 NOTIFY, ORCPT) into a recipient, or a Reply."""
    split = _split_params(params)
    if isinstance(split, Reply):
        return split
    notify: frozenset[Notify] = frozenset()
    orcpt = ""
    for name, value in split.items():
        if name == "NOTIFY":
            words = [w.upper() for w in (value or "").split(",")]
            try:
                notify = frozenset(Notify(w) for w in words)
            except ValueError:
                return Reply(501, "5.5.4", "NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY")
            if len(notify) != len(words) or (Notify.NEVER in notify and len(notify) > 1):
                return Reply(501, "5.5.4", "NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY")
        elif name == "ORCPT":
            parsed = _parse_orcpt(value)
            if parsed is None:
                return Reply(501, "5.5.4", "Malformed ORCPT parameter (addr-type;xtext)")
            orcpt = parsed
        else:
            return Reply(555, "5.5.4", f"RCPT parameter {name} not recognized")
    return EnvelopeRecipient(address=address, notify=notify, orcpt=orcpt)


_HELO_UNSAFE: Final = re.compile(r"[^\x21-\x7e]|[()\\;]")


def _address_literal(ip: str) -> str:
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return "[unknown]"
    return f"[IPv6:{parsed}]" if parsed.version == 6 else f"[{parsed}]"


def received_header(
    *,
    helo: str,
    peer_ip: str,
    server_name: str,
    protocol: str,
    queue_id: str,
    recipients: Sequence[str],
    when: datetime,
    tls: str = "",
) -> bytes:
    """The Received trace header (RFC 5321 4.4), folded, ending in CRLF.

    We do no reverse DNS, so the TCP-info is the address literal alone. The "for" clause names
    the recipient only when there is exactly one (no disclosure of the others).
    """
    helo_text = _HELO_UNSAFE.sub("?", helo)[:255] or "unknown"
    lines = [f"Received: from {helo_text} ({_address_literal(peer_ip)})"]
    if tls:
        lines.append(f"\t({tls})")
    lines.append(f"\tby {server_name} with {protocol} id {queue_id}")
    date = format_datetime(when)
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _protocol_name(*, esmtp: bool, tls: bool, auth: bool, utf8: bool) -> str:
    """RFC 3848 / RFC 6531 3.7.3 "with" keyword: ESMTP, ESMTPS, ESMTPSA, UTF8SMTPS..."""
    if not esmtp:
        return "SMTP"
    base = "UTF8SMTP" if utf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if auth else "")


# ---------------------------------------------------------------------------------------------
# Connection accounting


class ConnectionLimiter:
    """Counts open sessions per client address and in total (aiosmtpd has no such limit);
    the counting is core's, shared with IMAP and POP3: this adds the SMTP reply and stress.

    Under stress (at least `_STRESS` of the total limit open), a client address already
    holding a quarter of its own limit gets no more: the last fifth of the slots stays for
    addresses that hold few, so idle connections from a few dozen addresses cannot fill the
    house before a new sender arrives (with the defaults, 25 addresses x 20 = 500 would)."""

    def __init__(self, per_client: int, total: int) -> None:
        self._counter = ConnectionCounter(per_client, total)
        self._total = total
        self._stress_at = max(1, int(total * _STRESS))
        self._stress_share = max(1, per_client // 4)

    @property
    def total(self) -> int:
        return self._counter.total

    @property
    def full(self) -> bool:
        return self._counter.total >= self._total

    def held(self, peer_ip: str) -> int:
        return self._counter.held(peer_ip)

    def within_share(self, peer_ip: str) -> bool:
        """Whether this address holds less than its share under stress."""
        return self._counter.held(peer_ip) < self._stress_share

    @property
    def stressed(self) -> bool:
        """Near the total limit: idle and pre-MAIL sessions get `stress_timeout`."""
        return self._counter.total >= self._stress_at

    def acquire(self, peer_ip: str) -> Reply | None:
        """Count one more session, or return the 421 that refuses it."""
        if self.stressed and not self.within_share(peer_ip):
            return Reply(421, "4.7.0", "Error: too many connections from your address while busy")
        refused = self._counter.acquire(peer_ip)
        return None if refused is None else Reply(421, "4.7.0", f"Error: {refused}")

    def release(self, peer_ip: str) -> None:
        self._counter.release(peer_ip)


# ---------------------------------------------------------------------------------------------
# The session


@dataclass(slots=True)
class _ListenerState:
    """What changes while a listener runs (its `_Settings` are frozen)."""

    stopping: bool = False  # stop_smtp_server ran: nothing more is committed
    stressed: bool = False  # the limiter was stressed when a session last came or went
    stored: asyncio.Event = field(default_factory=asyncio.Event)  # a session ended a commit
    refused: int = 0  # connections refused since the last log line about it
    refusal_logged_at: float = -_REFUSALS_LOGGED_EVERY
    stress_logged_at: float = -_REFUSALS_LOGGED_EVERY


@dataclass(frozen=True, slots=True)
class _Settings:
    """What every session of one listener shares."""

    policy: SmtpPolicy
    server_name: str
    limits: LimitsConfig
    tls_context: ssl.SSLContext | None
    clock: Clock
    limiter: ConnectionLimiter
    tarpit_after: int
    loop: asyncio.AbstractEventLoop
    sessions: set[SmtpSession] = field(default_factory=set)  # open, for shutdown
    state: _ListenerState = field(default_factory=_ListenerState)
    authenticator: Authenticator | None = None  # AUTH offered (after TLS) when set
    auth_required: bool = False  # MAIL needs AUTH first (submission)
    implicit_tls: bool = False  # the socket is TLS from the start (465)
    spool_dir: Path | None = None  # where big messages are spooled during DATA (smtp/spooling)
    space: FreeSpace | None = None  # MAIL is refused (452 4.3.1) when it says there is no room


@dataclass(slots=True)
class _Transaction:
    sender: str | None = None
    params: MailParams = field(default_factory=MailParams)
    recipients: list[EnvelopeRecipient] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Body:
    """The message as DATA delivers it: kept lines, or the reason it will be refused.

    It is fed pieces of the dot-stuffed stream as they are read (a piece may end anywhere,
    even between CR and LF) and judges whole lines, many at a time, with bytes operations:
    a line is what ends in CRLF, and any other CR or LF in it makes the message bare.
    """

    limits: LimitsConfig
    sink: BodySink  # unstuffed runs of whole lines (in memory, then a spool file)
    partial: bytes = b""  # the start of a line whose CRLF has not come yet
    in_long_line: bool = False  # `partial` was cut: the line is too long already
    size: int = 0
    bare: bool = False
    too_long: bool = False
    too_big: bool = False

    def add(self, piece: bytes) -> None:
        data = self.partial + piece if self.partial else piece
        end = data.rfind(b"\r\n") + 2
        if end == 1:  # no CRLF: all of it belongs to the current line
            self.partial = data
        else:
            self.partial = data[end:]
            self._add_lines(data[:end])
        if len(self.partial) > self.limits.line_length + 1:  # over the limit even unstuffed
            self._cut_partial()

    def _cut_partial(self) -> None:
        """Drop the start of an over-long line, keeping a final CR (its LF may come next)."""
        keep = b"\r" if self.partial.endswith(b"\r") else b""
        dropped = self.partial[: len(self.partial) - len(keep)]
        self.bare = self.bare or b"\r" in dropped or b"\n" in dropped
        self.size += len(dropped)
        self.too_long = self.in_long_line = True
        self.partial = keep
        self.sink.drop()

    def _add_lines(self, block: bytes) -> None:
        """Whole lines, each ending in CRLF, still dot-stuffed."""
        if self.in_long_line:  # the first line is the tail of one already judged too long
            self.in_long_line = False
            cut = block.find(b"\r\n") + 2
            self.bare = self.bare or b"\r" in block[: cut - 2] or b"\n" in block[: cut - 2]
            self.size += cut
            block = block[cut:]
            if not block:
                return
        if not self.bare:
            rest = block.replace(b"\r\n", b"")
            self.bare = b"\r" in rest or b"\n" in rest
        unstuffed = block.replace(b"\r\n.", b"\r\n")
        if unstuffed[:1] == b".":
            unstuffed = unstuffed[1:]
        self.size += len(unstuffed)
        if max(map(len, unstuffed.split(b"\r\n"))) + 2 > self.limits.line_length:
            self.too_long = True
        if self.size > self.limits.message_size:
            self.too_big = True
        if self.bare or self.too_long or self.too_big:
            self.sink.drop()
        else:
            self.sink.add(unstuffed)

    def result(self) -> Reply | None:
        """None when the message may be accepted (its octets are in the sink), else why not."""
        if self.bare:
            return _BARE_NEWLINE_DATA
        if self.too_long:
            return Reply(
                500,
                "5.5.0",
                f"Line too long: at most {self.limits.line_length} octets per line including "
                "CRLF (RFC 5321 section 4.5.3.1.6)",
            )
        if self.too_big:
            return Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
        return None


class _Handler:
    """The aiosmtpd handler object: a safety net only; the session consults the policy."""

    async def handle_exception(self, error: Exception) -> str:
        del error
        return _INTERNAL_ERROR.render()


_HANDLER: Final = _Handler()
_Command = Callable[["SmtpSession", str], Awaitable[None]]


class SmtpSession(SMTP):
    """One SMTP connection: aiosmtpd's protocol with our command loop and commands."""

    def __init__(self, settings: _Settings) -> None:
        limits = settings.limits
        # SMTP.__init__ is not called: per connection it runs inspect.getmembers() over the
        # session and handler to find AUTH mechanisms and hooks (~300 us, a third of a
        # message's budget), and we use neither. We set the same state it sets, inert where we
        # replaced the feature; tests/unit/smtp checks the attribute set against aiosmtpd's.
        reader_limit = max(limits.line_length, limits.command_length + _ESMTP_ALLOWANCE["MAIL"])
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(limit=max(reader_limit + 2, _READ_LIMIT), loop=settings.loop),
            client_connected_cb=self._cb_client_connected,
            loop=settings.loop,
        )
        self.__ident__ = "sitemail"
        self.loop = settings.loop
        self.event_handler = _HANDLER
        self.data_size_limit = limits.message_size
        self.enable_SMTPUTF8 = True
        self._decode_data = False
        self.hostname = settings.server_name
        self.tls_context = settings.tls_context
        self.require_starttls = False
        self._timeout_duration = limits.timeout
        self._timeout_handle: asyncio.TimerHandle | None = None
        self._tls_handshake_okay = True
        self._tls_protocol: sslproto.SSLProtocol | None = None
        self._original_transport: asyncio.BaseTransport | None = None
        self.session: Session | None = None
        self.envelope: AiosmtpdEnvelope | None = None
        self.transport: asyncio.BaseTransport | None = None
        self._handler_coroutine: asyncio.Task[None] | None = None
        self._auth_require_tls = True
        self._auth_required = False
        self._authenticator = None
        self._auth_callback = None
        self._auth_methods: dict[str, Any] = {}
        self._handle_hooks: dict[str, Any] = {}
        self._smtp_methods: dict[str, Any] = {}
        self._ehlo_hook_ver = None
        self._enforce_call_limit = False
        self._proxy_timeout = None
        self._settings = settings
        self._policy = settings.policy
        self._limits = limits
        self._peer_ip = ""
        self._counted = False
        self._refused = False
        self._lost = False
        self._closing = False
        self._committing = False  # DATA is over and the message is being stored
        self._waiting = False  # waiting for a command line
        self._idle_since = 0.0  # loop time when it began to wait
        self._out: list[bytes] = []
        self._errors = 0
        self._helo = ""
        self._esmtp = False
        self._txn = _Transaction()
        self._auth: AuthResult | None = None

    # -- connection lifecycle ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is not None:
            # The TLS transport is up after STARTTLS. aiosmtpd drops any plaintext the client
            # pipelined after STARTTLS here (CVE-2024-34083) and starts a new Session.
            super().connection_made(transport)
            self._helo = ""
            self._esmtp = False
            self._txn = _Transaction()
            return
        peer = transport.get_extra_info("peername")
        self._peer_ip = str(peer[0]) if peer else ""
        local = transport.get_extra_info("sockname")
        emit(SmtpConnected(self._peer_ip, int(local[1]) if local else 0))
        limiter = self._settings.limiter
        if limiter.full and limiter.within_share(self._peer_ip):
            self._make_room()
        refusal = limiter.acquire(self._peer_ip)
        if refusal is not None:
            self._log_refusal(refusal)
            self._refused = True
            # A cast, not isinstance: uvloop's transports do not derive from asyncio's classes.
            writer = cast(asyncio.WriteTransport, transport)
            writer.write(refusal.render().encode("ascii") + b"\r\n")
            writer.close()
            return
        self._counted = True
        self._settings.sessions.add(self)
        super().connection_made(transport)
        self._note_stress()

    def _log_refusal(self, refusal: Reply) -> None:
        """At most one line per `_REFUSALS_LOGGED_EVERY` seconds and listener, with the count
        since the last one: a flood of connections must not become a flood of log lines."""
        state = self._settings.state
        state.refused += 1
        now = self.loop.time()
        if now - state.refusal_logged_at >= _REFUSALS_LOGGED_EVERY:
            log.warning(
                "smtp connection refused peer=%s reply=%r refused=%d (since the last such line)",
                self._peer_ip,
                refusal.render(),
                state.refused,
            )
            state.refused, state.refusal_logged_at = 0, now

    def _make_room(self) -> None:
        """Every slot is taken and this client holds few: close the session idle longest
        (waiting for a first command or a next transaction for at least a fifth of the
        stress timeout) of the address holding the most, so idle connections cannot lock
        new senders out until their timeouts."""
        now = self.loop.time()
        limiter = self._settings.limiter
        grace = self._limits.stress_timeout * _EVICT_AFTER
        if grace <= 0:  # stress_timeout = 0: no stress mode
            return
        idle = [
            s
            for s in self._settings.sessions
            if s._waiting and s._txn.sender is None and s._counted and not s._closing
            if now - s._idle_since >= grace
        ]
        if not idle:
            return
        victim = max(idle, key=lambda s: (limiter.held(s._peer_ip), now - s._idle_since))
        log.info("smtp idle session closed for a new client peer=%s", victim._peer_ip)
        victim._counted = False  # its slot is this client's now, before its close completes
        limiter.release(victim._peer_ip)
        victim._shut(_EVICTED)

    def _note_stress(self) -> None:
        """When the listener becomes stressed, the sessions already waiting for a first
        command or a next transaction get the short timeout from now (their 300 s timers
        would keep new senders out for minutes)."""
        state, stressed = self._settings.state, self._settings.limiter.stressed
        if stressed and not state.stressed:
            idle = [s for s in self._settings.sessions if s._waiting and s._txn.sender is None]
            if self.loop.time() - state.stress_logged_at >= _REFUSALS_LOGGED_EVERY:
                state.stress_logged_at = self.loop.time()  # at most once an interval, too
                log.warning(
                    "smtp connections near the limit: idle timeout %gs for %d idle session(s)",
                    self._limits.stress_timeout,
                    len(idle),
                )
            for session in idle:
                session._reset_timeout()
        state.stressed = stressed

    def _reset_timeout(self, duration: float | None = None) -> None:
        """The command timeout, shortened under stress for sessions outside a transaction
        (idle, or not at MAIL yet), as Postfix's stress mode does; DATA passes its own."""
        if (
            duration is None
            and self._txn.sender is None
            and self._limits.stress_timeout > 0
            and self._settings.limiter.stressed
        ):
            duration = self._limits.stress_timeout
        super()._reset_timeout(duration)

    def _timeout_cb(self) -> None:
        """Say why before closing (RFC 5321 4.5.3.2: the server may close after a timeout)."""
        transport = cast(asyncio.WriteTransport | None, self.transport)
        if transport is not None and not transport.is_closing():
            log.info("smtp timeout peer=%s", self._peer_ip)
            self._shut(_TIMEOUT)  # closing calls connection_lost, as aiosmtpd's own callback

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused or self._lost:
            return
        self._lost = True
        self._settings.sessions.discard(self)
        if self._counted:
            self._counted = False
            self._settings.limiter.release(self._peer_ip)
            self._settings.state.stressed = self._settings.limiter.stressed
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        """Replaces aiosmtpd's command loop (see the module docstring for why)."""
        try:
            await self._converse()
        except asyncio.CancelledError:
            self._writer.close()
            raise
        except (ConnectionError, asyncio.IncompleteReadError):
            await self._close()
        except Exception:
            log.exception("smtp session failed peer=%s", self._peer_ip)
            with contextlib.suppress(Exception):
                self._queue(_INTERNAL_ERROR)
                await self._close()

    async def _converse(self) -> None:
        refusal = await self._policy.check_connect(self._peer_ip)
        if refusal is not None:
            self._queue(refusal)
            await self._close()
            return
        self._queue(Reply(220, "", f"{self._settings.server_name} ESMTP sitemail"))
        while not self._closing and self.transport is not None:
            line = await self._read_command_line()
            if line is None:
                continue
            self._reset_timeout()
            verb, _, arg_bytes = line.partition(b" ")
            if not verb.isalpha() or not verb.isascii():
                await self._reply(Reply(500, "5.5.2", "Error: bad syntax"))
                continue
            command = verb.upper().decode("ascii")
            allowance = _ESMTP_ALLOWANCE.get(command, 0) if self._esmtp else 0
            if len(line) + 2 > self._limits.command_length + allowance:
                await self._reply(_LINE_TOO_LONG_COMMAND)
                continue
            try:
                arg = arg_bytes.decode("utf-8").strip(" \t")
            except UnicodeDecodeError:
                await self._reply(Reply(500, "5.5.2", "Error: invalid UTF-8 in command"))
                continue
            method = _COMMANDS.get(command)
            if method is None:
                await self._reply(Reply(500, "5.5.2", "Error: command not recognized"))
                continue
            try:
                await method(self, arg)
            except (asyncio.CancelledError, ConnectionError):
                raise
            except Exception:
                log.exception("smtp command failed peer=%s command=%s", self._peer_ip, command)
                await self._reply(_INTERNAL_ERROR)
            if self._settings.state.stopping:  # it was storing a message: its reply is out
                await self._reply(SHUTDOWN)
            elif command == "MAIL" and self._txn.sender is not None:
                self._reset_timeout()  # in a transaction now: the full timeout, even if stressed

    async def _read_command_line(self) -> bytes | None:
        """One command line without its CRLF; None if it was refused (reply sent)."""
        # StreamReader._buffer is private; aiosmtpd itself clears it for STARTTLS.
        if b"\n" not in self._reader._buffer:  # type: ignore[attr-defined]
            await self._flush()  # about to wait for input: send the batched replies
        self._waiting = True
        self._idle_since = self.loop.time()
        try:
            line: bytes = await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            self._waiting = False
            await self._discard_rest_of_line(exc.consumed)
            await self._reply(_LINE_TOO_LONG_COMMAND)
            return None
        self._waiting = False
        if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
            await self._reply(_BARE_NEWLINE_COMMAND)
            return None
        if len(line) == 2:
            await self._reply(Reply(500, "5.5.2", "Error: empty command"))
            return None
        return line[:-2]

    async def _discard_rest_of_line(self, consumed: int) -> None:
        await self._reader.read(consumed)
        while True:
            try:
                await self._reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as exc:
                await self._reader.read(exc.consumed)
            else:
                return

    # -- replies -----------------------------------------------------------------------------

    def _queue(self, reply: Reply) -> None:
        self._out.append(reply.render().encode("utf-8") + b"\r\n")

    async def _flush(self) -> None:
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._writer.write(data)
        await self._writer.drain()

    def _shut(self, reply: Reply | None) -> None:
        """Send the replies owed (queued, not yet flushed) and `reply`, then close, now."""
        transport = cast(asyncio.WriteTransport | None, self.transport)
        self._closing = True
        if transport is None or transport.is_closing():
            return
        if reply is not None:
            self._queue(reply)
        data, self._out = b"".join(self._out), []
        with contextlib.suppress(Exception):
            transport.write(data)
        transport.close()

    async def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(ConnectionError):
            await self._flush()
        if self.transport is not None:
            self.transport.close()

    async def _reply(self, reply: Reply) -> None:
        """Queue a reply; count errors, tarpit, and close after a 421 or too many errors."""
        if self._closing:
            return
        if reply.code >= 400 and reply.code != 421 and reply.enhanced not in ("4.5.3", "4.3.1"):
            self._errors += 1
            if self._errors > self._settings.tarpit_after and self._limits.error_delay > 0:
                await self._flush()
                await asyncio.sleep(self._limits.error_delay)
        self._queue(reply)
        if reply.code == 421:
            await self._close()
        elif self._errors >= self._limits.error_limit:
            log.warning("smtp error limit peer=%s errors=%d", self._peer_ip, self._errors)
            self._queue(Reply(421, "4.7.0", "Error: too many errors, closing connection"))
            await self._close()

    # -- state helpers -----------------------------------------------------------------------

    @property
    def _tls_active(self) -> bool:
        return self._tls_protocol is not None or self._settings.implicit_tls

    def _session_info(self) -> SessionInfo:
        auth = self._auth
        return SessionInfo(
            peer_ip=self._peer_ip,
            helo=self._helo,
            tls=self._tls_active,
            authenticated_user=auth.mailbox if auth else "",
            addresses=auth.addresses if auth else frozenset(),
        )

    def _ehlo_keywords(self) -> list[str]:
        keywords = [
            "PIPELINING",
            f"SIZE {self._limits.message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "DSN",
        ]
        if self._settings.tls_context is not None and not self._tls_active:
            keywords.append("STARTTLS")
        if self._settings.authenticator is not None and self._tls_active:
            keywords.append("AUTH PLAIN LOGIN")
        return keywords

    # -- commands (dispatched through _COMMANDS, not aiosmtpd's smtp_* methods) ----------

    async def _cmd_helo(self, hostname: str) -> None:
        if not hostname:
            await self._reply(Reply(501, "5.5.4", "Syntax: HELO hostname"))
            return
        self._helo, self._esmtp, self._txn = hostname, False, _Transaction()
        await self._reply(Reply(250, "", self._settings.server_name))

    async def _cmd_ehlo(self, hostname: str) -> None:
        if not hostname:
            await self._reply(Reply(501, "5.5.4", "Syntax: EHLO hostname"))
            return
        self._helo, self._esmtp, self._txn = hostname, True, _Transaction()
        lines = [self._settings.server_name, *self._ehlo_keywords()]
        await self._reply(Reply(250, "", "\n".join(lines)))

    async def _cmd_noop(self, arg: str) -> None:
        del arg  # RFC 5321 4.1.1.9: a parameter is allowed and ignored
        await self._reply(_OK)

    async def _cmd_rset(self, arg: str) -> None:
        if arg:
            await self._reply(Reply(501, "5.5.4", "Syntax: RSET"))
            return
        self._txn = _Transaction()
        await self._reply(_OK)

    async def _cmd_quit(self, arg: str) -> None:
        del arg
        self._queue(Reply(221, "2.0.0", "Bye"))
        await self._close()

    async def _cmd_vrfy(self, arg: str) -> None:
        if not arg:
            await self._reply(Reply(501, "5.5.4", "Syntax: VRFY <address>"))
            return
        await self._reply(
            Reply(252, "2.1.5", "Cannot VRFY user, but will accept message and attempt delivery")
        )

    async def _cmd_expn(self, arg: str) -> None:
        del arg
        await self._reply(Reply(502, "5.5.1", "Error: EXPN not available"))

    async def _cmd_help(self, arg: str) -> None:
        del arg
        await self._reply(Reply(214, "2.0.0", "Commands: " + " ".join(sorted(_COMMANDS))))

    async def _cmd_auth(self, arg: str) -> None:
        authenticator = self._settings.authenticator
        if authenticator is None:
            await self._reply(Reply(502, "5.5.1", "Error: authentication not available here"))
            return
        if not self._helo or not self._esmtp:
            await self._reply(Reply(503, "5.5.1", "Error: send EHLO first"))
            return
        if not self._tls_active:
            await self._reply(
                Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
            )
            return
        if self._auth is not None:
            await self._reply(Reply(503, "5.5.1", "Error: already authenticated"))
            return
        if self._txn.sender is not None:
            await self._reply(Reply(503, "5.5.1", "Error: AUTH not allowed during a transaction"))
            return
        mechanism, _, initial = arg.partition(" ")
        credentials = await self._read_credentials(mechanism.upper(), initial.strip())
        if isinstance(credentials, Reply):
            await self._reply(credentials)
            return
        login, password = credentials
        result = await authenticator.authenticate(login, password, self._peer_ip)
        if result.ok:
            self._auth = result
            log.info("smtp auth peer=%s user=%s", self._peer_ip, result.alias)
            await self._reply(Reply(235, "2.7.0", "Authentication successful"))
        elif result.outcome is AuthOutcome.LOCKED:
            await self._reply(Reply(454, "4.7.0", result.text))
        else:
            emit(AuthFailed("smtp", self._peer_ip, str(result.outcome)))
            await self._reply(Reply(535, "5.7.8", result.text))

    async def _read_credentials(self, mechanism: str, initial: str) -> tuple[str, str] | Reply:
        """PLAIN (RFC 4616) or LOGIN: the login name and password, or the Reply refusing them."""
        if mechanism == "PLAIN":
            response = await self._challenge("", initial)
            if isinstance(response, Reply):
                return response
            parts = response.split(b"\0")
            if len(parts) != 3:
                return Reply(501, "5.5.2", "Error: malformed PLAIN credentials")
            authzid, login, password = (p.decode("utf-8", "replace") for p in parts)
            if authzid and authzid.lower() != login.lower():
                return Reply(535, "5.7.8", "authorization as another user is not allowed")
            return login, password
        if mechanism == "LOGIN":
            name = await self._challenge("VXNlcm5hbWU6", initial)  # "Username:"
            if isinstance(name, Reply):
                return name
            secret = await self._challenge("UGFzc3dvcmQ6")  # "Password:"
            if isinstance(secret, Reply):
                return secret
            return name.decode("utf-8", "replace"), secret.decode("utf-8", "replace")
        return Reply(504, "5.5.4", "Error: unrecognized authentication mechanism (PLAIN, LOGIN)")

    async def _challenge(self, challenge: str, given: str = "") -> bytes | Reply:
        """Send `334 challenge` (unless the client gave the answer already) and decode the
        base64 answer; "*" cancels (RFC 4954 section 4)."""
        if given:
            text = given
        else:
            self._queue(Reply(334, "", challenge))
            line = await self._read_command_line()
            if line is None:
                return Reply(501, "5.5.2", "Error: malformed authentication response")
            if len(line) + 2 > _AUTH_LINE:
                return Reply(500, "5.5.6", "Error: authentication exchange line is too long")
            text = line.decode("ascii", "replace").strip()
        if text == "*":
            return Reply(501, "5.0.0", "Authentication cancelled")
        if text == "=":
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return Reply(501, "5.5.2", "Error: cannot decode the base64 response")

    async def _cmd_starttls(self, arg: str) -> None:
        if arg:
            await self._reply(Reply(501, "5.5.4", "Syntax: STARTTLS"))
            return
        context = self._settings.tls_context
        if context is None:
            await self._reply(Reply(502, "5.5.1", "Error: STARTTLS not available"))
            return
        if self._tls_active:
            await self._reply(Reply(503, "5.5.1", "Error: TLS already active"))
            return
        self._queue(Reply(220, "2.0.0", "Ready to start TLS"))
        await self._flush()
        # As aiosmtpd's _cmd_starttls: put an SSLProtocol between the socket and us.
        waiter = self.loop.create_future()
        self._tls_protocol = sslproto.SSLProtocol(
            self.loop, self, context, waiter, server_side=True
        )
        plain = self.transport
        assert plain is not None
        self._original_transport = plain
        plain.set_protocol(self._tls_protocol)
        self.transport = self._tls_protocol._app_transport
        self._tls_protocol.connection_made(plain)
        try:
            await waiter
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed handshake: nothing sensible can be said in clear
            log.info("smtp TLS handshake failed peer=%s error=%s", self._peer_ip, exc)
            self._closing = True
            self._out.clear()
            with contextlib.suppress(Exception):
                plain.close()
            # SSLProtocol reports connection_lost to us only after a completed handshake, so
            # end the session here (as aiosmtpd's loop does for TLSSetupException): this frees
            # the connection slot and stops the timer.
            self.connection_lost(exc)

    async def _cmd_mail(self, arg: str) -> None:
        if not self._helo:
            await self._reply(_BAD_SEQUENCE_HELO)
            return
        if self._settings.auth_required and self._auth is None:
            await self._reply(Reply(530, "5.7.0", "Authentication required"))
            return
        if self._txn.sender is not None:
            await self._reply(Reply(503, "5.5.1", "Error: nested MAIL command"))
            return
        syntax = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
        if arg[:5].upper() != "FROM:":
            await self._reply(syntax)
            return
        split = split_path(arg[5:])
        if split is None:
            await self._reply(syntax)
            return
        path, words = split
        if words and not self._esmtp:
            await self._reply(Reply(555, "5.5.4", "Error: MAIL parameters need EHLO"))
            return
        params = parse_mail_params(words, size_limit=self._limits.message_size)
        if isinstance(params, Reply):
            await self._reply(params)
            return
        space = self._settings.space
        if space is not None and not space.has_room(params.size):
            await self._reply(_NO_STORAGE)
            return
        sender = ""
        if path:
            try:
                sender = str(parse_address(path))
            except InvalidAddressError as exc:
                await self._reply(Reply(553, "5.1.7", f"Bad sender address: {exc.message}"))
                return
        if not sender.isascii() and not params.smtputf8:
            await self._reply(Reply(553, "5.6.7", "Non-ASCII sender address needs SMTPUTF8"))
            return
        reply = await self._policy.check_mail(self._session_info(), sender)
        if reply.is_positive:
            self._txn = _Transaction(sender=sender, params=params)
        await self._reply(reply)

    async def _cmd_rcpt(self, arg: str) -> None:
        if not self._helo:
            await self._reply(_BAD_SEQUENCE_HELO)
            return
        if self._txn.sender is None:
            await self._reply(Reply(503, "5.5.1", "Error: need MAIL command"))
            return
        syntax = Reply(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
        if arg[:3].upper() != "TO:":
            await self._reply(syntax)
            return
        split = split_path(arg[3:])
        if split is None:
            await self._reply(syntax)
            return
        path, words = split
        if words and not self._esmtp:
            await self._reply(Reply(555, "5.5.4", "Error: RCPT parameters need EHLO"))
            return
        if len(self._txn.recipients) >= self._limits.recipients:
            await self._reply(Reply(452, "4.5.3", "Error: too many recipients"))
            return
        try:
            address = str(parse_address(path))
        except InvalidAddressError as exc:
            await self._reply(Reply(553, "5.1.3", f"Bad recipient address: {exc.message}"))
            return
        if not address.isascii() and not self._txn.params.smtputf8:
            await self._reply(Reply(553, "5.6.7", "Non-ASCII recipient address needs SMTPUTF8"))
            return
        recipient = parse_rcpt_params(address, words)
        if isinstance(recipient, Reply):
            await self._reply(recipient)
            return
        reply = await self._policy.check_rcpt(self._session_info(), recipient)
        key = address.lower()
        if reply.is_positive and key not in self._txn.seen:
            self._txn.seen.add(key)  # a duplicate RCPT is answered alike but delivered once
            self._txn.recipients.append(recipient)
        await self._reply(reply)

    async def _cmd_data(self, arg: str) -> None:
        if not self._helo:
            await self._reply(_BAD_SEQUENCE_HELO)
            return
        if self._txn.sender is None:
            await self._reply(Reply(503, "5.5.1", "Error: need MAIL command"))
            return
        if not self._txn.recipients:
            await self._reply(Reply(554, "5.5.1", "Error: no valid recipients"))
            return
        if arg:
            await self._reply(Reply(501, "5.5.4", "Syntax: DATA"))
            return
        self._queue(Reply(354, "", "End data with <CR><LF>.<CR><LF>"))
        await self._flush()
        txn, self._txn = self._txn, _Transaction()
        body = _Body(self._limits, BodySink(self._settings.spool_dir))
        try:
            refusal = await self._read_data(body)
            content = await body.sink.content() if refusal is None else None
            if refusal is None and body.sink.failed:  # the spool file (its last write too)
                refusal = _SPOOL_FAILED
            if refusal is not None or content is None:
                await self._reply(refusal or _SPOOL_FAILED)
                self._reset_timeout()
                return
            if self._settings.state.stopping:  # the commit point: after a stop, nothing is stored
                await self._reply(SHUTDOWN)
                return
            self._committing = True  # stop_smtp_server lets the reply out before it closes
            try:
                reply = await self._deliver(txn, content)
            finally:
                self._committing = False
                self._settings.state.stored.set()
        finally:
            body.sink.close()  # the policy has the message durably, or refused it
        self._reset_timeout()
        await self._reply(reply)

    async def _read_data(self, body: _Body) -> Reply | None:
        """Read the message up to CRLF.CRLF into `body`; None, or the Reply refusing it.

        Only CRLF ends a line (aiosmtpd 1.4.5's fix for CVE-2024-27305), and a line holding any
        other CR or LF makes us refuse the whole message. After a refusal is certain, the rest
        is still read to the end, but no longer kept. Whatever whole lines are buffered are
        taken at once (a message sent in one go is one read), never past the end, so commands
        pipelined after it stay in the reader; the end is a "." CRLF that starts a line.
        The body goes to its sink as it comes (a spool file beyond a size: smtp/spooling.py).
        """
        reader = self._reader
        tail = b"\r\n"  # the last two octets read: DATA starts at the start of a line
        self._reset_timeout(self._limits.data_timeout)
        timer_started = self.loop.time()
        while True:
            # StreamReader._buffer is private; aiosmtpd itself clears it for STARTTLS.
            buffered: bytearray = reader._buffer  # type: ignore[attr-defined]
            try:
                if b".\r\n" in buffered:
                    piece: bytes = await reader.readuntil(b".\r\n")
                elif (end := buffered.rfind(b"\r\n") + 2) > 1:
                    piece = await reader.readexactly(end)  # no end of message among these
                else:
                    piece = await reader.readuntil(b"\r\n")  # wait for the next line
            except asyncio.LimitOverrunError as exc:
                piece = await reader.read(exc.consumed)
            now = self.loop.time()
            if now - timer_started > _DATA_TIMER_GRANULARITY:
                self._reset_timeout(self._limits.data_timeout)
                timer_started = now
            if piece.endswith(b".\r\n") and (tail + piece)[-5:-3] == b"\r\n":
                body.add(piece[:-3])
                return body.result()
            body.add(piece)
            tail = (tail + piece)[-2:]
            if body.sink.flush_due:
                await body.sink.flush()

    async def _deliver(self, txn: _Transaction, body: Content) -> Reply:
        """Prepend our Received header and hand the message to the acceptor."""
        assert txn.sender is not None
        params = txn.params
        tls_note = ""
        if self._tls_active and self.transport is not None:
            cipher: Any = self.transport.get_extra_info("cipher")
            if cipher:
                tls_note = f"using {cipher[1]} with cipher {cipher[0]} ({cipher[2]} bits)"
        queue_id = self._policy.new_queue_id()
        header = received_header(
            helo=self._helo,
            peer_ip=self._peer_ip,
            server_name=self._settings.server_name,
            protocol=_protocol_name(
                esmtp=self._esmtp,
                tls=self._tls_active,
                auth=self._auth is not None,
                utf8=params.smtputf8,
            ),
            queue_id=queue_id,
            recipients=[r.address for r in txn.recipients],
            when=self._settings.clock.utcnow(),
            tls=tls_note,
        )
        envelope = Envelope(
            sender=txn.sender,
            recipients=tuple(txn.recipients),
            ret=params.ret,
            envid=params.envid,
            body=params.body,
            smtputf8=params.smtputf8,
            client_address=self._peer_ip,
            client_name=self._helo,
            authenticated_as=self._auth.mailbox if self._auth else "",
        )
        self._reset_timeout(self._limits.data_timeout)
        try:
            return await self._policy.accept(envelope, body.with_prefix(header), queue_id=queue_id)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.exception("smtp accept failed peer=%s queue_id=%s", self._peer_ip, queue_id)
            return _ACCEPT_FAILED


_COMMANDS: Final[dict[str, _Command]] = {
    "HELO": SmtpSession._cmd_helo,
    "EHLO": SmtpSession._cmd_ehlo,
    "MAIL": SmtpSession._cmd_mail,
    "RCPT": SmtpSession._cmd_rcpt,
    "DATA": SmtpSession._cmd_data,
    "RSET": SmtpSession._cmd_rset,
    "NOOP": SmtpSession._cmd_noop,
    "QUIT": SmtpSession._cmd_quit,
    "VRFY": SmtpSession._cmd_vrfy,
    "EXPN": SmtpSession._cmd_expn,
    "HELP": SmtpSession._cmd_help,
    "AUTH": SmtpSession._cmd_auth,
    "STARTTLS": SmtpSession._cmd_starttls,
}


async def start_smtp_server(
    host: str,
    port: int,
    *,
    policy: SmtpPolicy,
    server_name: str,
    limits: LimitsConfig,
    tls_context: ssl.SSLContext | None = None,
    clock: Clock | None = None,
    tarpit_after: int | None = None,
    authenticator: Authenticator | None = None,
    auth_required: bool = False,
    implicit_tls: bool = False,
    spool_dir: Path | None = None,
    space: FreeSpace | None = None,
) -> asyncio.Server:
    """Listen on host:port (0 = any free port) in the running loop; returns the server.

    The bound port is `server.sockets[0].getsockname()[1]`. `stop_smtp_server(server)` stops
    accepting and ends the sessions still open (`server.close()` alone leaves them running).
    `spool_dir`: where messages too big for memory are spooled while DATA arrives (default:
    the system's temporary directory; smtp/spooling.py).
    """
    loop = asyncio.get_running_loop()
    settings = _Settings(
        policy=policy,
        server_name=server_name,
        limits=limits,
        tls_context=tls_context,
        clock=clock or SystemClock(),
        limiter=ConnectionLimiter(limits.connections_per_client, limits.connections_total),
        tarpit_after=max(1, limits.error_limit // 2) if tarpit_after is None else tarpit_after,
        loop=loop,
        authenticator=authenticator,
        auth_required=auth_required,
        implicit_tls=implicit_tls,
        spool_dir=spool_dir,
        space=space,
    )
    server = await loop.create_server(
        lambda: SmtpSession(settings),
        host,
        port,
        ssl=tls_context if implicit_tls else None,
        backlog=_BACKLOG,
    )
    _LISTENERS[server] = settings
    return server


_LISTENERS: weakref.WeakKeyDictionary[asyncio.Server, _Settings] = weakref.WeakKeyDictionary()
SHUTDOWN = Reply(421, "4.3.2", "Service shutting down, try again later")


def stop_smtp_server(server: asyncio.Server) -> None:
    """Stop accepting, and end every open session with 421 except those storing a message:
    a server that stops must not go on accepting mail on connections opened before (a
    client's pooled connection would get a 250 from a server whose queue is closing). A
    transaction cut short was never answered 250, so its client keeps the message and
    retries. A session storing a message sends its reply (250 or 451) and then the 421;
    `drain_smtp_server` waits for them. From now on no session stores anything: one whose
    DATA ends later is answered 421 instead."""
    server.close()
    settings = _LISTENERS.get(server)
    if settings is None:
        return
    settings.state.stopping = True
    for session in list(settings.sessions):
        if not session._committing:
            session._shut(SHUTDOWN)


async def drain_smtp_server(server: asyncio.Server, within: float) -> int:
    """After `stop_smtp_server`: wait up to `within` seconds for the sessions storing a message to
    send their reply, then close whatever is left. Returns how many were cut off while
    storing (their clients heard nothing: the message may or may not be queued)."""
    settings = _LISTENERS.pop(server, None)
    if settings is None:
        return 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while any(s._committing for s in settings.sessions):
                settings.state.stored.clear()
                await settings.state.stored.wait()
    cut = sum(1 for s in settings.sessions if s._committing)
    for session in list(settings.sessions):
        session._shut(None)
    return cut
