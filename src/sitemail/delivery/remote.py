"""Outbound SMTP: the ``relay``, ``mx`` and ``site`` transports, on aiosmtplib.

Its one job: hand one queued message to the next hop for recipients that share it, and
answer one ``RecipientResult`` per recipient: 2xx delivered, 4xx deferred, 5xx failed
(for that recipient only), with the remote reply and the host that gave it.

Collaborators: a ``routing.resolver.Resolver`` (DNS, injected: MX for ``mx`` routes, A/AAAA
for relay hosts given by name; never the machine's resolver), aiosmtplib's ``SMTP`` for the
protocol (low-level ``mail()``/``rcpt()``/``data()`` so each recipient carries its own
NOTIFY/ORCPT), and an optional ``site_hop`` lookup (site name -> ``routing.SiteHop``).

Next hops (``Route.nexthop``):
- ``relay``: ``"host[:port]"`` (a domain route or the smart host). An IP address is used
  as is; a name is resolved to its A/AAAA addresses (no MX lookup). No port: ``port``.
- ``mx``: the recipient domain, resolved by ``resolve_mail_hosts`` (preference order,
  random among equals, implicit MX, null MX, never ourselves: an MX that is one of
  ``local_names``/``local_addresses`` is dropped with every MX of equal or worse
  preference, and nothing left is 5.4.6). An address literal (``[192.0.2.1]``) is used
  directly. Every MX host uses ``port``.
- ``site``: the first-hop site's name; ``site_hop(name)`` gives its routing address, the
  relay host a domain route names for it (then as relay) or none (then MX of the routing
  address), and its pinned certificate fingerprints. Mail to a site gets an
  ``X-Sitemail-Trace`` field naming ``trace_site`` (routing.trace) in front of its header,
  made for each transaction once the RCPT replies are in and signed with the site key for
  the recipients accepted, so the next site can recognise a resend (queue.dedupe).
A relay host or site hop at one of ``local_addresses`` on a port in ``listen_ports`` is this
server: 5.4.6, failed at once, never sent (a domain route or connected site pointing back).

Trying hosts: the addresses of the hosts, in order (at most ``max_addresses``), until the
recipients are settled. A host that does not answer usefully - connection refused or timed
out, a greeting or EHLO that is not 2xx, a TLS policy failure, a lost connection, a 421 at
any point - is a *session* failure: the unsettled recipients go on to the next address.
Once a host has answered MAIL, RCPT or DATA its reply is final for this attempt (as Postfix:
a 5xx RCPT is not retried elsewhere). When every address failed the recipients are
deferred with the last error. A peer that greets us or answers EHLO with our own HELO
name is ourselves: 5.4.6 "loops back to myself", failed at once (Postfix's check; it also
catches a relay or site route that points back at this server).

Results: 2xx -> DELIVERED (the DATA reply), 4xx -> DEFERRED, 5xx -> FAILED, each with the
reply's code, its enhanced status (or x.0.0 when the peer sends none) and its text plus
"(in reply to ... command)"; ``remote_mta`` is the host name that answered (also on
verdicts drawn from its greeting or EHLO: 5.6.7, 5.3.4, 5.4.6). Verdicts with no reply
behind them have ``remote_mta`` "": connection failures 4.4.1, lost connections and
timeouts in a session 4.4.2, DNS errors with the DnsRouteError's code and status
(temporary -> DEFERRED, permanent -> FAILED), TLS policy 4.7.5, configuration 4.3.5.
``deliver`` never raises for network or DNS problems (a bug defers with 4.3.0).

Parameters: MAIL gets SIZE when advertised (a message over the advertised limit fails
552 5.3.4), BODY=8BITMIME when the message is 8-bit and the peer offers 8BITMIME (an 8-bit
message to a peer without it is sent as is: no MIME downgrade), SMTPUTF8 when wanted and
offered, RET/ENVID when the peer offers DSN; RCPT gets NOTIFY/ORCPT when the peer offers
DSN (xtext-encoded; a recipient rewritten on the way gets ORCPT=rfc822;<original>).
Without DSN they are left out (RFC 3461 §4.2 would then want a "relayed" notice for
NOTIFY=SUCCESS; this transport reports DELIVERED either way). SMTPUTF8: when the sender or the headers need it and the peer lacks it, every
recipient fails 5.6.7; a non-ASCII recipient address alone fails only that recipient.
Transactions carry at most ``max_recipients_per_transaction`` recipients; a ``452``
(too many recipients) after some were accepted sends the rest in the next transaction.

TLS policy:
- Opportunistic (default): STARTTLS when offered, the certificate *not* verified (there is
  no name to verify it against that an attacker could not also change without DNSSEC/DANE
  or MTA-STS; RFC 7435 opportunistic security). A STARTTLS refused with a reply continues
  in plaintext on the same connection. A failed handshake (or EHLO after it) retries the
  same address once in plaintext right away, as Postfix does at security level "may"
  (``RETRY_AS_PLAINTEXT`` in its smtp client); ``tls_fallback_plaintext=False`` makes it a
  session failure instead.
- Pinned (``pinned_fingerprints``: route nexthop -> SHA-256 fingerprints of the peer's DER
  certificate, hex, colons allowed): STARTTLS is required and the certificate must match
  one pin, else the session fails with 4.7.5 and nothing is sent in plaintext. Keys are
  the route's nexthop as written (case-insensitive): ``"relay.example:2525"`` or the
  recipient domain for ``mx``; a site's pins come with its ``SiteHop``.

PIPELINING (RFC 2920), when the peer offers it: MAIL, every RCPT and DATA go in one write
(led by RSET when the connection's last transaction did not complete), the replies are read
in order, then the message: two round trips per message instead of four plus one per
recipient. Each reply settles exactly what it settles one command at a time: a refused MAIL
settles every recipient with its reply; each RCPT's reply its recipient; the DATA reply, or
the final one, every accepted recipient; no RCPT accepted -> no message (an empty one if
the peer says 354 anyway); a 421 anywhere is a session failure. aiosmtplib has no
pipelining API and its protocol keeps one reply at a time, so for the exchange our own
reader (``_ReplyReader``, every reply kept in order) is set on the transport, and
aiosmtplib's protocol gets it back afterwards.

Big messages (not in memory: queue/content.py) are sent in chunks read from the queue in a
thread, each written once the socket has taken the one before (asyncio flow control on our
reader), with or without PIPELINING: neither this process nor the transport's buffer holds
one whole. The SIZE check and parameter use the size the queue recorded.

Connection pool: per (address, port, pins) destination, at most
``max_connections_per_destination`` connections; a connection is used by one delivery at
a time (a lock per connection) and goes back idle unless its session broke. Reusing an
idle connection starts with RSET (a dead one is replaced silently), except with a
pipelining peer: there the transaction's first reply shows whether the connection is
alive, and a reused one that dies (or answers 421) before answering anything is replaced
just the same, since nothing was done on it. Transactions on one connection are separated
by RSET where one did not complete; idle connections older than ``idle_timeout`` are closed
(``prune_idle``, also run at every ``deliver``); a connection carries at most
``max_transactions_per_connection`` messages. ``aclose()`` QUITs idle connections. One
instance belongs to one event loop.

Progress: each step (looking up, waiting for a connection, connecting, TLS, each command and
the reply awaited) is reported with ``queue.attempts.report_stage``, so ``queue list`` can say
what an attempt in progress is doing; outside an attempt the reports do nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import random
import re
import ssl
import time
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import TypeVar, cast

from aiosmtplib import (
    SMTP,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import normalize_message_line_endings

from sitemail.core.envelope import BodyType, Envelope, EnvelopeRecipient, Notify
from sitemail.core.events import SmtpOut, SmtpOutSessionFailed, emit
from sitemail.mailauth.signing import DkimSigner
from sitemail.queue.attempts import report_stage
from sitemail.queue.content import Content
from sitemail.queue.model import Outcome, QueuedMessage, QueuedRecipient, RecipientResult
from sitemail.routing.domain_routes import parse_nexthop
from sitemail.routing.resolver import DnsRouteError, Resolver, resolve_mail_hosts
from sitemail.routing.route import Route, SiteHop, Transport
from sitemail.routing.trace import (
    SIGNATURE_EXTRA,
    Signer,
    content_digest,
    signed_trace_field,
    trace_field,
)

__all__ = ["RemoteDelivery", "fingerprint_of", "wire_chunks", "wire_digest", "xtext"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_ADDR_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")  # RFC 3461 addr-type: an atom
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NOTIFY_ORDER = (Notify.SUCCESS, Notify.FAILURE, Notify.DELAY)
_QUIT_TIMEOUT = 5.0
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")  # never on a command line (CR/LF: injection)
_LEADING_DOT = re.compile(rb"(?m)^\.")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_MAX_REPLY = 64 * 1024  # a reply longer than this (unfinished) is nonsense: the session ends
_CARRY_LIMIT = 1024 * 1024  # a line longer than this is sent in pieces (no CRLF is added)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


# -- small pure helpers ----------------------------------------------------------------------


def xtext(value: str) -> str:
    """RFC 3461 §4 xtext: ``+`` and ``=``, controls, space and non-ASCII become ``+XX``."""
    out: list[str] = []
    for byte in value.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def fingerprint_of(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as lowercase hex without colons."""
    return hashlib.sha256(der).hexdigest()


def _normal_fingerprint(text: str) -> str:
    value = text.replace(":", "").replace(" ", "").strip().lower()
    if not _HEX64.match(value):
        raise ValueError(f"not a SHA-256 fingerprint (64 hex digits): {text!r}")
    return value


def _ip(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _split_reply(code: int, message: str) -> tuple[str, str]:
    """(enhanced status, text on one line) of a reply; x.0.0 when it carries none."""
    lines = [line.strip() for line in message.splitlines()] or [""]
    status = ""
    cleaned: list[str] = []
    for line in lines:
        match = _ENHANCED.match(line)
        if match and int(match.group(1)) == code // 100:
            status = status or match.group(0)
            line = line[match.end() :].strip()  # noqa: PLW2901 - the line without its status
        cleaned.append(line)
    if not status:
        klass = code // 100 if code // 100 in (2, 4, 5) else 4
        status = f"{klass}.0.0"
    return status, " ".join(part for part in cleaned if part)


def _first_word(message: str) -> str:
    words = message.split(None, 1)
    return words[0].lower().rstrip(".") if words else ""


def _headers_need_utf8(content: bytes) -> bool:
    head = content.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return not head.isascii()


class _LineEnds:
    """One pass over a message's octets: pieces cut after a line end, with CRLF line ends
    (bare CR or LF fixed, as `normalize_message_line_endings` does for a whole message), the
    partial line carried to the next chunk (a line longer than `_CARRY_LIMIT` is cut
    elsewhere, but never between CR and LF)."""

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + chunk if self._carry else chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) < _CARRY_LIMIT:
                self._carry = data
                return b""
            cut = len(data) - data.endswith(b"\r")
        self._carry = data[cut:]
        return _LINE_END.sub(b"\r\n", data[:cut])

    def end(self) -> bytes:
        """The last line, ended."""
        carry, self._carry = self._carry, b""
        if not carry:
            return b""
        return _LINE_END.sub(b"\r\n", carry) + (b"" if carry.endswith(b"\r") else b"\r\n")


async def wire_chunks(content: Content) -> AsyncIterator[bytes]:
    """A message as DATA carries it, a chunk at a time: every line ending CRLF, a dot that
    starts a line doubled (RFC 5321 4.5.2), the last line ended (`_LineEnds`)."""
    ends = _LineEnds()
    line_start = True  # the next octet sent starts a line
    async for chunk in content.stream():
        piece = ends.feed(chunk)
        if piece:
            yield _stuffed(piece, line_start)
            line_start = piece.endswith(b"\n")
    last = ends.end()
    if last:
        yield _stuffed(last, line_start)


def wire_digest(content: Content) -> bytes:
    """The trace's `content_digest` of a message as `wire_chunks` sends it (before the dots
    are doubled), read a chunk at a time: blocking, run it in a thread."""
    return content_digest(_wire_pieces(content))


def _wire_pieces(content: Content) -> Iterator[bytes]:
    ends = _LineEnds()
    for chunk in content.chunks():
        yield ends.feed(chunk)
    yield ends.end()


def _stuffed(piece: bytes, line_start: bool) -> bytes:
    """`piece` (CRLF line ends) with its line-leading dots doubled (`line_start`: whether its
    first octet starts a line)."""
    out = _LEADING_DOT.sub(b"..", piece)
    return out if line_start or not piece.startswith(b".") else out[1:]


def _notify_param(recipient: EnvelopeRecipient) -> str:
    if not recipient.notify:
        return ""
    if Notify.NEVER in recipient.notify:
        return "NOTIFY=NEVER"
    return "NOTIFY=" + ",".join(n.value for n in _NOTIFY_ORDER if n in recipient.notify)


def _orcpt_param(orcpt: str) -> str:
    """``ORCPT=type;xtext``; "" when the stored value has no usable address type."""
    kind, semi, address = orcpt.partition(";")
    kind = kind.strip()
    if not semi or not address or not _ADDR_TYPE.match(kind):
        return ""
    return f"ORCPT={kind};{xtext(address)}"


def _reason(exc: BaseException) -> str:
    """A short reason for a network error: the OS's words when there is an errno."""
    for candidate in (exc, exc.__cause__, exc.__context__):
        if isinstance(candidate, OSError) and candidate.errno:
            return os.strerror(candidate.errno)
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    text = str(exc).strip()
    return text or type(exc).__name__


def _command(head: bytes, options: list[str]) -> bytes:
    """One command line; ValueError for a control character (CR/LF would inject commands)."""
    args = [head, *(option.encode("ascii") for option in options)]
    if any(_CONTROL.search(arg) for arg in args):
        raise ValueError("a control character in the command")
    return b" ".join(args) + b"\r\n"


# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    """One address to try: the host name it came from, the address, the port."""

    name: str
    address: str
    port: int

    @property
    def describe(self) -> str:
        """Postfix's ``name[address]:port``."""
        return f"{self.name}[{self.address}]:{self.port}"

    @property
    def sni(self) -> str | None:
        return None if _ip(self.name) is not None else self.name


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What happened to a recipient, before it has its row id."""

    outcome: Outcome
    code: int
    status: str
    text: str
    remote_mta: str = ""

    def result(self, rcpt_id: int) -> RecipientResult:
        return RecipientResult(
            rcpt_id, self.outcome, self.code, self.status, self.text, self.remote_mta
        )


def _deferred(status: str, text: str, code: int = 451) -> _Verdict:
    return _Verdict(Outcome.DEFERRED, code, status, text)


def _failed(status: str, text: str, code: int = 554) -> _Verdict:
    return _Verdict(Outcome.FAILED, code, status, text)


def _from_reply(code: int, message: str, command: str, target: _Target) -> _Verdict:
    """A remote reply as a verdict: 2xx delivered, 4xx deferred, 5xx failed."""
    status, text = _split_reply(code, message)
    text = f"{text} (in reply to {command} command)".strip()
    if 200 <= code < 300:
        outcome = Outcome.DELIVERED
    elif 500 <= code < 600:
        outcome = Outcome.FAILED
    else:  # 4xx, and any nonsense (1xx/3xx where 2xx was due) is worth another try
        outcome = Outcome.DEFERRED
        if not 400 <= code < 500:
            text = f"unexpected reply {code} {text}"
            code, status = 451, "4.5.0"
    return _Verdict(outcome, code, status, text, target.name)


def _too_many_recipients(verdict: _Verdict) -> bool:
    """RFC 5321 §4.5.3.1.10: 452 (4.5.3) means "send the rest in another transaction"."""
    return verdict.status == "4.5.3" or (verdict.code == 452 and verdict.status == "4.0.0")


def _softened(verdict: _Verdict) -> _Verdict:
    """A session-level verdict as a deferral (the next host, or a later retry, may work)."""
    if verdict.outcome is Outcome.DEFERRED:
        return verdict
    code = 400 + verdict.code % 100 if 500 <= verdict.code < 600 else 451
    status = "4" + verdict.status[1:] if verdict.status[:1] == "5" else "4.0.0"
    return _Verdict(Outcome.DEFERRED, code, status, verdict.text, verdict.remote_mta)


class _SessionError(Exception):
    """This address could not take the message; the unsettled recipients move on."""

    def __init__(
        self, verdict: _Verdict, *, final: bool = False, retry_plaintext: bool = False
    ) -> None:
        super().__init__(verdict.text)
        self.verdict = verdict if final else _softened(verdict)
        self.final = final  # settles every unsettled recipient; no other host is tried
        self.retry_plaintext = retry_plaintext


class _StaleConnectionError(Exception):
    """A reused idle connection turned out dead before its peer answered anything of ours:
    nothing was done, so the recipients try again on another connection to the same host."""


class _ReplyReader(asyncio.Protocol):
    """The peer's replies, every one kept in order, while installed on a connection's transport
    for a pipelined exchange. aiosmtplib's protocol parses one reply per arrival of data and
    drops what arrives while a parsed reply waits to be picked up: fine for one command at a
    time, but pipelined replies can come in one segment or in several at once."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._error: SMTPException | None = None
        self._changed: asyncio.Event = asyncio.Event()
        self._writable: asyncio.Event = asyncio.Event()
        self._writable.set()
        self.answered = False  # the peer has answered something since we were installed

    def pause_writing(self) -> None:
        """The transport's buffer is full (asyncio flow control): `drained` waits."""
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def drained(self) -> None:
        """Until the transport takes more (at once unless paused, or after a failure)."""
        await self._writable.wait()

    def data_received(self, data: bytes) -> None:
        self._buffer.extend(data)
        try:
            while (reply := self._parse()) is not None:
                self._replies.append(reply)
        except SMTPResponseException as exc:
            self._error = exc
        self._changed.set()

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        error = SMTPServerDisconnected("Connection lost")
        error.__cause__ = exc
        self._fail(error)

    def _fail(self, error: SMTPException) -> None:
        if self._error is None:
            self._error = error
        self._changed.set()
        self._writable.set()  # a writer waiting to send finds the connection closed

    def _parse(self) -> SMTPResponse | None:
        """One whole reply (RFC 5321 4.2.1: "250-" lines, then "250 ") off the buffer."""
        lines: list[str] = []
        offset, code = 0, -1
        while (end := self._buffer.find(b"\n", offset)) >= 0:
            line = bytes(self._buffer[offset : end + 1])
            offset = end + 1
            head = line[:3]
            if not head.isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
                text = line.decode("utf-8", "replace").strip()
                raise SMTPResponseException(-1, f"Malformed SMTP reply line: {text!r}")
            code = int(head)
            lines.append(line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape"))
            if line[3:4] != b"-":
                del self._buffer[:offset]
                self.answered = True
                return SMTPResponse(code, "\n".join(lines))
        if len(self._buffer) > _MAX_REPLY:
            raise SMTPResponseException(-1, "Reply too long")
        return None

    async def reply(self) -> SMTPResponse:
        """The next reply, in order (the replies before a disconnection first)."""
        while not self._replies:
            if self._error is not None:
                raise self._error
            self._changed.clear()
            await self._changed.wait()
        return self._replies.popleft()


@dataclass(eq=False)
class _Connection:
    smtp: SMTP
    tls: bool
    last_used: float
    transactions: int = 0
    dirty: bool = False  # a MAIL was sent since the last completed DATA or RSET
    broken: bool = False
    proven: bool = True  # False: reused from idle without an RSET; alive only once it answers
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def alive(self) -> bool:
        return self.smtp.is_connected and not self.broken


class _Destination:
    """The connections to one (address, port, pins)."""

    def __init__(self, limit: int) -> None:
        self.slots = asyncio.Semaphore(limit)
        self.idle: list[_Connection] = []
        self.users = 0  # callers holding or waiting for a slot


_PoolKey = tuple[str, int, frozenset[str] | None]


@dataclass
class _Job:
    """One message for the recipients of one next hop, and what happened to each so far."""

    message: QueuedMessage
    # As SMTP carries it (CRLF line ends, ending in CRLF): in memory, fixed once; a big one
    # is fixed chunk by chunk as it is sent (wire_chunks)
    content: Content
    addresses: list[str]
    recipients: list[EnvelopeRecipient]
    originals: list[str]
    needs_utf8: bool  # the sender or the headers need SMTPUTF8
    # The trace field for the addresses a transaction's next hop accepted (site hops only)
    trace: Callable[[list[str]], bytes] | None = None
    trace_size: int = 0  # its length, for SIZE
    settled: dict[int, _Verdict] = field(default_factory=dict)

    @property
    def envelope(self) -> Envelope:
        return self.message.envelope

    @property
    def size(self) -> int:
        return self.trace_size + self.content.size

    def body(self, accepted: list[int]) -> Content:
        """The message for a transaction whose next hop accepted `accepted` (not stuffed)."""
        if self.trace is None:
            return self.content
        return self.content.with_prefix(self.trace([self.addresses[i] for i in accepted]))

    def pending(self) -> list[int]:
        return [i for i in range(len(self.addresses)) if i not in self.settled]

    def settle(self, index: int, verdict: _Verdict) -> None:
        self.settled.setdefault(index, verdict)


# -- the transport -----------------------------------------------------------------------------


class RemoteDelivery:
    """The outbound SMTP transport (``DeliveryAgent``) for relay, mx and site routes."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        helo_name: str,
        port: int = 25,
        local_names: Iterable[str] = (),
        local_addresses: Iterable[str] = (),
        connect_timeout: float = 30.0,
        command_timeout: float = 300.0,
        data_timeout: float = 600.0,
        starttls: bool = True,
        tls_fallback_plaintext: bool = True,
        pinned_fingerprints: Mapping[str, str | Sequence[str]] | None = None,
        max_connections_per_destination: int = 10,
        idle_timeout: float = 10.0,
        max_transactions_per_connection: int = 100,
        max_recipients_per_transaction: int = 100,
        max_addresses: int = 5,
        site_hop: Callable[[str], SiteHop | None] | None = None,
        trace_site: str = "",
        trace_signer: Signer | None = None,
        dkim_signer: DkimSigner | None = None,
        source_address: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """An outbound transport; nothing connects until ``deliver``.

        ``helo_name`` is sent in EHLO/HELO (and a peer greeting with it is a loop);
        ``port`` is used for MX hosts and for relay hosts without a port;
        ``local_names``/``local_addresses`` are this server for the MX self-check;
        timeouts are seconds: ``connect_timeout`` covers TCP and the greeting (each),
        ``command_timeout`` each command's reply and the TLS handshake, ``data_timeout``
        the message and its reply; ``source_address`` binds outgoing connections (the lab
        gives each site its own loopback address; use an address of the peers' family);
        ``site_hop`` maps a site name to how to reach it, and ``trace_site`` is the name
        written in the trace field of mail to other sites, signed with ``trace_signer``
        (the site key's ``sign``) for each transaction; ``dkim_signer`` DKIM-signs mail
        going out by MX or relay (mailauth.signing); ``rng`` orders equal MX
        preferences; ``clock`` (monotonic seconds) ages idle connections; ``wall_clock``
        (seconds since the epoch, the site's clock) dates trace fields.

        Raises ValueError for a bad HELO name, port, address, limit or fingerprint.
        """
        helo = helo_name.strip().lower().rstrip(".")
        if not helo or not helo.isascii() or any(c.isspace() for c in helo):
            raise ValueError(f"bad HELO name {helo_name!r}")
        if not 0 < port < 65536:
            raise ValueError(f"bad outbound port {port}")
        for limit in (
            max_connections_per_destination,
            max_transactions_per_connection,
            max_recipients_per_transaction,
            max_addresses,
        ):
            if limit < 1:
                raise ValueError("connection, transaction, recipient and address limits are >= 1")
        addresses = frozenset(local_addresses)
        for text in addresses:
            if _ip(text) is None:
                raise ValueError(f"local address {text!r} is not an IP address")
        self._resolver = resolver
        self._helo = helo
        self._port = port
        self._local_names = frozenset(
            {helo} | {n.strip().lower().rstrip(".") for n in local_names if n.strip()}
        )
        self._local_addresses = addresses
        self._local_ips = frozenset(a for a in (_ip(t) for t in addresses) if a is not None)
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._data_timeout = data_timeout
        self._starttls = starttls
        self._fallback = tls_fallback_plaintext
        self._pins: dict[str, frozenset[str]] = {}
        for nexthop, pins in (pinned_fingerprints or {}).items():
            values = [pins] if isinstance(pins, str) else list(pins)
            if not values:
                raise ValueError(f"no fingerprint pinned for {nexthop!r}")
            self._pins[nexthop.strip().lower()] = frozenset(_normal_fingerprint(v) for v in values)
        self._max_connections = max_connections_per_destination
        self._idle_timeout = idle_timeout
        self._max_transactions = max_transactions_per_connection
        self._max_recipients = max_recipients_per_transaction
        self._max_addresses = max_addresses
        self._site_hop = site_hop
        # Ports this server's SMTP listens on (set by the server once bound): a relay or
        # site hop to one of them on a local address is this server.
        self.listen_ports: set[int] = set()
        self._trace_site = trace_site
        self._trace_signer = trace_signer
        self._dkim = dkim_signer  # signs what leaves the organisation (not site hops)
        if source_address is not None and _ip(source_address) is None:
            raise ValueError(f"source address {source_address!r} is not an IP address")
        self._source = (source_address, 0) if source_address else None
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - MX shuffling
        self._clock = clock
        self._wall_clock = wall_clock
        self._destinations: dict[_PoolKey, _Destination] = {}
        self._closed = False
        # Opportunistic TLS verifies nothing (see the module docstring), so no CA store.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self._tls_context = context

    # -- the DeliveryAgent seam ------------------------------------------------------------

    async def deliver(
        self,
        message: QueuedMessage,
        content: Content,
        recipients: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]:
        """Deliver ``content`` to every recipient; one result each, in the given order."""
        self.prune_idle()
        groups: dict[tuple[Transport, str], list[int]] = {}
        for index, (_, route) in enumerate(recipients):
            key = (route.transport, route.nexthop.strip().lower())
            groups.setdefault(key, []).append(index)
        verdicts: list[_Verdict | None] = [None] * len(recipients)

        async def run(transport: Transport, nexthop: str, indexes: list[int]) -> None:
            members = [recipients[i] for i in indexes]
            for index, verdict in zip(
                indexes,
                await self._guarded(message, content, transport, nexthop, members),
                strict=True,
            ):
                verdicts[index] = verdict

        # The nexthop as the first route spells it (a site name may be case-sensitive).
        await asyncio.gather(
            *(run(t, recipients[idx[0]][1].nexthop.strip(), idx) for (t, _), idx in groups.items())
        )
        return [
            (v or _deferred("4.3.0", "internal error: no result")).result(rcpt.id)
            for v, (rcpt, _) in zip(verdicts, recipients, strict=True)
        ]

    async def _guarded(
        self,
        message: QueuedMessage,
        content: Content,
        transport: Transport,
        nexthop: str,
        members: list[tuple[QueuedRecipient, Route]],
    ) -> list[_Verdict]:
        try:
            return await self._deliver_group(message, content, transport, nexthop, members)
        except Exception as exc:  # a bug here defers; it must never lose or bounce mail
            log.exception("smtp_out internal error queue_id=%s", message.queue_id)
            verdict = _deferred("4.3.0", f"internal error in remote transport: {exc!r}")
            return [verdict] * len(members)

    async def _deliver_group(
        self,
        message: QueuedMessage,
        content: Content,
        transport: Transport,
        nexthop: str,
        members: list[tuple[QueuedRecipient, Route]],
    ) -> list[_Verdict]:
        envelope = message.envelope
        if content.in_memory:
            content = Content.of(normalize_message_line_endings(content.whole()))
        if self._dkim is not None and transport is not Transport.SITE:
            content = await self._dkim.sign(content, message.queue_id)
        job = _Job(
            message=message,
            content=content,
            addresses=[route.recipient or rcpt.recipient.address for rcpt, route in members],
            recipients=[rcpt.recipient for rcpt, _ in members],
            originals=[rcpt.recipient.address for rcpt, _ in members],
            needs_utf8=envelope.smtputf8
            and (not envelope.sender.isascii() or _headers_need_utf8(content.head)),
        )
        report_stage(f"looking up {transport} {nexthop}")
        if transport is Transport.SITE and self._trace_site:
            # routing's loop guard reads the version back (routing.router)
            await self._add_trace(job, nexthop, version=str(members[0][1].version or ""))
        plan, pins = await self._plan(transport, nexthop)
        if isinstance(plan, _Verdict):
            self._log(message, job.addresses, plan)
            return [plan] * len(members)
        last = _deferred("4.4.1", f"no address to try for {nexthop}")
        for target in plan:
            if not job.pending():
                break
            try:
                await self._deliver_to(target, pins, job)
            except _SessionError as error:
                last = error.verdict
                emit(SmtpOutSessionFailed(message.queue_id, target.describe, error.verdict.text))
                if error.final:
                    for index in job.pending():
                        job.settle(index, error.verdict)
        for index in job.pending():
            job.settle(index, last)
        verdicts = [job.settled[i] for i in range(len(members))]
        for address, verdict in zip(job.addresses, verdicts, strict=True):
            self._log(message, [address], verdict)
        return verdicts

    async def _add_trace(self, job: _Job, to_site: str, *, version: str) -> None:
        """Give a site hop's job its trace field: made for each transaction, signed (when
        there is a signer) for the site `to_site` and the recipients it accepted, naming the
        directory `version` the route was decided with (routing.trace). A big message's
        digest is a pass over it, a chunk at a time in a thread."""
        site, queue_id, sign = self._trace_site, job.message.queue_id, self._trace_signer
        digest = b""
        if sign is not None and job.content.in_memory:
            digest = content_digest(job.content.whole())
        elif sign is not None:
            report_stage("reading the message for its trace signature")
            digest = await asyncio.to_thread(wire_digest, job.content)

        def trace(addresses: list[str]) -> bytes:
            now = self._wall_clock()
            if sign is None:
                return trace_field(site, queue_id, now, v=version)
            return signed_trace_field(
                site,
                queue_id,
                now,
                sign=sign,
                to_site=to_site,
                sender=job.envelope.sender,
                recipients=addresses,
                digest=digest,
                params={"v": version},
            )

        job.trace = trace
        job.trace_size = len(trace_field(site, queue_id, self._wall_clock(), v=version))
        job.trace_size += SIGNATURE_EXTRA if sign is not None else 0

    @staticmethod
    def _log(message: QueuedMessage, addresses: list[str], verdict: _Verdict) -> None:
        for address in addresses:
            emit(
                SmtpOut(
                    message.queue_id,
                    address,
                    str(verdict.outcome),
                    verdict.remote_mta or "none",
                    verdict.status,
                    f"{verdict.code} {verdict.text}",
                )
            )

    # -- where to go ---------------------------------------------------------------------

    async def _plan(
        self, transport: Transport, nexthop: str
    ) -> tuple[list[_Target] | _Verdict, frozenset[str] | None]:
        """The addresses to try, in order (or the verdict for everyone when there are none),
        and the certificate fingerprints pinned for this next hop."""
        pins = self._pins.get(nexthop.lower())
        if transport is Transport.MX:
            return await self._mx_plan(nexthop), pins
        if transport is Transport.RELAY:
            return await self._relay_plan(nexthop, f"relay host {nexthop}"), pins
        if transport is Transport.SITE:
            return await self._site_plan(nexthop)
        return _deferred("4.3.5", f"route {transport} is not for the remote SMTP transport"), pins

    async def _site_plan(self, site: str) -> tuple[list[_Target] | _Verdict, frozenset[str] | None]:
        hop = self._site_hop(site) if self._site_hop is not None else None
        if hop is None:
            return _deferred("4.3.5", f"no connected-site entry for site {site}"), None
        pins = hop.pins or None
        if hop.relay is not None:
            what = f"site {site} (routing address {hop.routing_address}) host {hop.relay}"
            return await self._relay_plan(hop.relay, what), pins
        plan = await self._mx_plan(hop.routing_address)
        if isinstance(plan, _Verdict):
            plan = replace(plan, text=f"site {site}: {plan.text}")
        return plan, pins

    async def _mx_plan(self, domain: str) -> list[_Target] | _Verdict:
        if domain.startswith("[") and domain.endswith("]"):
            literal = domain[1:-1]
            literal = literal[5:] if literal.lower().startswith("ipv6:") else literal
            address = _ip(literal)
            if address is None:
                return _failed("5.1.2", f"bad address literal {domain}", 553)
            if address in self._local_ips:
                return _failed("5.4.6", f"mail for {domain} loops back to myself")
            return [_Target(str(address), str(address), self._port)]
        try:
            hosts = await resolve_mail_hosts(
                domain,
                self._resolver,
                local_names=self._local_names,
                local_addresses=self._local_addresses,
                rng=self._rng,
            )
        except DnsRouteError as exc:
            return self._dns_verdict(exc, "")
        targets = [
            _Target(host.name, address, self._port)
            for host in hosts.hosts
            for address in host.addresses
        ]
        return targets[: self._max_addresses]

    async def _relay_plan(self, spec: str, what: str) -> list[_Target] | _Verdict:
        try:
            host, port = parse_nexthop(spec)
        except ValueError as exc:
            return _deferred("4.3.5", f"bad next hop for {what}: {exc}")
        port = port or self._port
        if _ip(host) is not None:
            if self._is_me(host, port):
                return _failed("5.4.6", f"{what} is this server: mail would loop to myself")
            return [_Target(host, host, port)]
        try:
            addresses = await self._resolver.addresses(host)
        except DnsRouteError as exc:
            return self._dns_verdict(exc, f"{what}: ")
        if not addresses:
            return _failed("5.4.4", f"{what}: host {host} has no address records")
        if any(self._is_me(address, port) for address in addresses):
            return _failed("5.4.6", f"{what} resolves to this server: mail would loop to myself")
        return [_Target(host, address, port) for address in addresses[: self._max_addresses]]

    def _is_me(self, address: str, port: int) -> bool:
        """Whether (address, port) is where this server listens for SMTP."""
        return _ip(address) in self._local_ips and port in self.listen_ports

    @staticmethod
    def _dns_verdict(exc: DnsRouteError, prefix: str) -> _Verdict:
        outcome = Outcome.DEFERRED if exc.temporary else Outcome.FAILED
        return _Verdict(outcome, exc.code, exc.enhanced, f"{prefix}{exc}")

    # -- one address ---------------------------------------------------------------------

    async def _deliver_to(self, target: _Target, pins: frozenset[str] | None, job: _Job) -> None:
        """Deliver the job's pending recipients through ``target`` (raises _SessionError)."""
        plaintext = False
        while True:
            try:
                async with self._connection(target, pins, plaintext=plaintext) as conn:
                    await self._transactions(conn, target, job)
            except _StaleConnectionError:
                # Bounded: each stale one is closed, and a fresh connection is never stale.
                log.debug("smtp_out stale connection host=%s", target.describe)
                continue
            except _SessionError as error:
                if error.retry_plaintext and not plaintext:
                    log.info(
                        "smtp_out tls_fallback host=%s reason=%r",
                        target.describe,
                        error.verdict.text,
                    )
                    plaintext = True
                    continue
                raise
            return

    async def _transactions(self, conn: _Connection, target: _Target, job: _Job) -> None:
        queue = job.pending()
        while queue:
            chunk, rest = queue[: self._max_recipients], queue[self._max_recipients :]
            leftover = await self._transaction(conn, target, job, chunk)
            if leftover == chunk:  # no progress: cannot happen, but never loop on it
                verdict = _deferred("4.5.3", "too many recipients", 452)
                for index in leftover:
                    job.settle(index, verdict)
                leftover = []
            queue = leftover + rest

    async def _transaction(
        self, conn: _Connection, target: _Target, job: _Job, chunk: list[int]
    ) -> list[int]:
        """One MAIL/RCPT.../DATA; settles what it can; returns indexes to send again."""
        sendable = self._screen(conn.smtp, target, job, chunk)
        if not sendable:
            return []
        utf8 = conn.smtp.supports_extension("smtputf8") and (
            job.envelope.smtputf8
            or not job.envelope.sender.isascii()
            or not all(job.addresses[i].isascii() for i in sendable)
        )
        if conn.smtp.supports_extension("pipelining"):
            return await self._pipelined(conn, target, job, sendable, utf8=utf8)
        if not await self._mail(conn, target, job, sendable, utf8=utf8):
            return []
        accepted, leftover = await self._rcpts(conn.smtp, target, job, sendable, utf8=utf8)
        if accepted:
            await self._data(conn, target, job, accepted)
        return leftover

    @staticmethod
    def _screen(smtp: SMTP, target: _Target, job: _Job, chunk: list[int]) -> list[int]:
        """The recipients this peer can take; the others fail (SMTPUTF8, SIZE) here."""
        utf8_offered = smtp.supports_extension("smtputf8")
        sendable: list[int] = []
        for index in chunk:
            if (job.needs_utf8 or not job.addresses[index].isascii()) and not utf8_offered:
                text = f"SMTPUTF8 is required, but was not offered by host {target.describe}"
                job.settle(index, _Verdict(Outcome.FAILED, 554, "5.6.7", text, target.name))
            else:
                sendable.append(index)
        limit = smtp.esmtp_extensions.get("size", "").strip()
        if sendable and limit.isdigit() and 0 < int(limit) < job.size:
            text = f"message size {job.size} exceeds size limit {limit} of server {target.describe}"
            for index in sendable:
                job.settle(index, _Verdict(Outcome.FAILED, 552, "5.3.4", text, target.name))
            return []
        return sendable

    async def _mail(
        self, conn: _Connection, target: _Target, job: _Job, sendable: list[int], *, utf8: bool
    ) -> bool:
        """RSET if need be, then MAIL FROM; False when the sender was refused (settled)."""
        smtp = conn.smtp
        if conn.dirty:
            await self._net(target, "sending RSET", smtp.rset())
            conn.dirty = False
        options = self._mail_options(smtp, job, utf8)
        try:
            conn.dirty = True
            await self._net(
                target,
                "sending MAIL FROM",
                smtp.mail(
                    job.envelope.sender, options=options, encoding="utf-8" if utf8 else "ascii"
                ),
            )
        except SMTPSenderRefused as exc:
            verdict = _from_reply(exc.code, exc.message, "MAIL FROM", target)
            if exc.code == 421 or not smtp.is_connected:
                raise _SessionError(verdict) from exc
        except ValueError as exc:  # an address aiosmtplib will not put on a command line
            conn.dirty = False
            verdict = _failed("5.1.7", f"bad sender address for SMTP: {exc}", 553)
        else:
            return True
        for index in sendable:
            job.settle(index, verdict)
        return False

    async def _rcpts(
        self, smtp: SMTP, target: _Target, job: _Job, sendable: list[int], *, utf8: bool
    ) -> tuple[list[int], list[int]]:
        """RCPT TO each; (accepted, left for another transaction after a 452)."""
        accepted: list[int] = []
        for position, index in enumerate(sendable):
            try:
                await self._net(
                    target,
                    "sending RCPT TO",
                    smtp.rcpt(
                        job.addresses[index],
                        options=self._rcpt_options(smtp, job, index),
                        encoding="utf-8" if utf8 else "ascii",
                    ),
                )
            except SMTPRecipientRefused as exc:
                verdict = _from_reply(exc.code, exc.message, "RCPT TO", target)
                if exc.code == 421 or not smtp.is_connected:
                    raise _SessionError(verdict) from exc
                if accepted and _too_many_recipients(verdict):
                    return accepted, sendable[position:]
                job.settle(index, verdict)
            except ValueError as exc:
                job.settle(index, _failed("5.1.3", f"bad recipient address for SMTP: {exc}", 553))
            else:
                accepted.append(index)
        return accepted, []

    async def _data(
        self, conn: _Connection, target: _Target, job: _Job, accepted: list[int]
    ) -> None:
        """DATA and the message; its reply settles every accepted recipient."""
        if not job.content.in_memory:  # sent in chunks, as when pipelining
            async with self._replies(conn) as reader:
                self._send(conn, [b"DATA\r\n"])
                data = await self._read(conn, reader, target, "DATA")
                await self._send_message(conn, reader, target, job, accepted=accepted, data=data)
            return
        try:
            reply = await self._net(
                target,
                "sending message body",
                conn.smtp.data(job.body(accepted).whole(), timeout=self._data_timeout),
            )
        except SMTPDataError as exc:
            verdict = _from_reply(exc.code, exc.message, "end of DATA", target)
            if exc.code == 421 or not conn.smtp.is_connected:
                raise _SessionError(verdict) from exc
        else:
            conn.dirty = False
            conn.transactions += 1
            verdict = _from_reply(reply.code, reply.message, "end of DATA", target)
        for index in accepted:
            job.settle(index, verdict)

    # -- pipelining (RFC 2920) -------------------------------------------------------------

    async def _pipelined(
        self, conn: _Connection, target: _Target, job: _Job, sendable: list[int], *, utf8: bool
    ) -> list[int]:
        """[RSET,] MAIL, every RCPT and DATA in one write, the replies read in order, then the
        message: two round trips instead of 3 + recipients. Each reply settles what it would
        have settled one command at a time; returns indexes to send again (after a 452)."""
        commands = self._envelope_commands(conn.smtp, job, sendable, utf8=utf8)
        if commands is None:
            return []
        mail, rcpts = commands
        async with self._replies(conn) as reader:
            reset = conn.dirty  # RSET may lead a group (RFC 2920 section 3.1)
            lines = [b"RSET\r\n"] * reset + [mail, *(line for _, line in rcpts), b"DATA\r\n"]
            self._send(conn, lines)
            conn.dirty = True
            if reset:
                await self._expect_reset(conn, reader, target)
            accepted, leftover = await self._envelope_replies(
                conn, reader, target, job, [index for index, _ in rcpts]
            )
            data = await self._read(conn, reader, target, "DATA")
            await self._send_message(conn, reader, target, job, accepted=accepted, data=data)
        return leftover

    def _envelope_commands(
        self, smtp: SMTP, job: _Job, sendable: list[int], *, utf8: bool
    ) -> tuple[bytes, list[tuple[int, bytes]]] | None:
        """The MAIL line and each recipient's RCPT line; an address that cannot go on a
        command line is settled here, unsent (None: nothing to send)."""
        encoding = "utf-8" if utf8 else "ascii"
        try:
            mail = _command(
                b"MAIL FROM:" + quote_address(job.envelope.sender).encode(encoding),
                self._mail_options(smtp, job, utf8),
            )
        except ValueError as exc:
            verdict = _failed("5.1.7", f"bad sender address for SMTP: {exc}", 553)
            for index in sendable:
                job.settle(index, verdict)
            return None
        rcpts: list[tuple[int, bytes]] = []
        for index in sendable:
            try:
                address = quote_address(job.addresses[index]).encode(encoding)
                rcpts.append(
                    (index, _command(b"RCPT TO:" + address, self._rcpt_options(smtp, job, index)))
                )
            except ValueError as exc:
                job.settle(index, _failed("5.1.3", f"bad recipient address for SMTP: {exc}", 553))
        return (mail, rcpts) if rcpts else None

    async def _envelope_replies(
        self,
        conn: _Connection,
        reader: _ReplyReader,
        target: _Target,
        job: _Job,
        indexes: list[int],
    ) -> tuple[list[int], list[int]]:
        """Read the MAIL and RCPT replies and settle what they decide; (accepted, left for
        another transaction). A refused MAIL settles every recipient with its reply (their
        RCPTs are answered, 503 as a rule, and read only to stay in step)."""
        mail = await self._read(conn, reader, target, "MAIL FROM")
        refused = None
        if not 200 <= mail.code < 300:
            refused = _from_reply(mail.code, mail.message, "MAIL FROM", target)
            if mail.code == 421:
                raise _SessionError(refused)
            for index in indexes:
                job.settle(index, refused)
        accepted: list[int] = []
        leftover: list[int] = []
        for index in indexes:
            reply = await self._read(conn, reader, target, "RCPT TO")
            if refused is not None:
                continue
            verdict = _from_reply(reply.code, reply.message, "RCPT TO", target)
            if reply.code == 421:
                raise _SessionError(verdict)
            if reply.code in (250, 251):
                accepted.append(index)
            elif leftover or (accepted and _too_many_recipients(verdict)):
                leftover.append(index)  # sent one at a time, it would not have been sent yet
            else:
                job.settle(index, verdict)
        return accepted, leftover

    async def _send_message(
        self,
        conn: _Connection,
        reader: _ReplyReader,
        target: _Target,
        job: _Job,
        *,
        accepted: list[int],
        data: SMTPResponse,
    ) -> None:
        """After the DATA reply: the message for the accepted recipients, whose verdict is the
        final reply. With none accepted the peer should refuse DATA; if it says 354 anyway it
        gets an empty message (RFC 2920 section 3.1), and the transaction stays dirty."""
        if data.code != 354:
            verdict = _from_reply(data.code, data.message, "DATA", target)
            if data.code == 421:
                raise _SessionError(verdict)
            for index in accepted:
                job.settle(index, verdict)
            return
        if not accepted:
            self._send(conn, [b".\r\n"])
            await self._read(conn, reader, target, "end of DATA")
            return
        body = job.body(accepted)
        if body.in_memory:  # line ends fixed already (the trace field's too)
            self._send(conn, [_LEADING_DOT.sub(b"..", body.whole()), b".\r\n"])
        else:
            await self._net(target, "sending message body", self._stream(conn, reader, body))
        reply = await self._read(conn, reader, target, "end of DATA", patience=self._data_timeout)
        verdict = _from_reply(reply.code, reply.message, "end of DATA", target)
        if reply.code == 421:
            raise _SessionError(verdict)
        conn.dirty = False
        conn.transactions += 1
        for index in accepted:
            job.settle(index, verdict)

    async def _stream(self, conn: _Connection, reader: _ReplyReader, body: Content) -> None:
        """A big message a chunk at a time (read from the queue in a thread), each sent once
        the socket has taken the one before: never whole in memory, here or in the
        transport's buffer. A read failure leaves the DATA unfinished, so nothing is sent."""
        async with asyncio.timeout(self._data_timeout):
            async for piece in wire_chunks(body):
                self._send(conn, [piece])
                await reader.drained()
            self._send(conn, [b".\r\n"])

    async def _expect_reset(self, conn: _Connection, reader: _ReplyReader, target: _Target) -> None:
        reply = await self._read(conn, reader, target, "RSET")
        if not 200 <= reply.code < 300:
            raise _SessionError(_from_reply(reply.code, reply.message, "RSET", target))

    @asynccontextmanager
    async def _replies(self, conn: _Connection) -> AsyncIterator[_ReplyReader]:
        """Our reader on the connection's transport for a pipelined exchange (aiosmtplib's
        protocol gets it back after, for the next EHLO-level command or QUIT)."""
        transport = conn.smtp.transport
        if transport is None or transport.is_closing():
            raise _SessionError(_deferred("4.4.2", "connection closed before the transaction"))
        reader = _ReplyReader()
        own = transport.get_protocol()
        transport.set_protocol(reader)
        try:
            yield reader
        finally:
            if transport.is_closing():
                conn.broken = True
            else:
                transport.set_protocol(own)

    @staticmethod
    def _send(conn: _Connection, chunks: list[bytes]) -> None:
        """Write without waiting (the replies say how it went; the transport buffers)."""
        transport = conn.smtp.transport
        if transport is None or transport.is_closing():
            if not conn.proven:
                raise _StaleConnectionError
            raise _SessionError(_deferred("4.4.2", "connection closed while sending"))
        cast(asyncio.WriteTransport, transport).write(b"".join(chunks))

    async def _read(
        self,
        conn: _Connection,
        reader: _ReplyReader,
        target: _Target,
        command: str,
        *,
        patience: float | None = None,
    ) -> SMTPResponse:
        """The next reply (to `command`); a lost connection, a timeout or nonsense is a
        session failure, or, on a reused connection that never answered, a stale one."""
        stage = f"sending {command}" if command != "end of DATA" else "sending message body"
        limit = patience or self._command_timeout

        async def next_reply() -> SMTPResponse:
            async with asyncio.timeout(limit):
                return await reader.reply()

        try:
            reply = await self._net(
                target, stage, next_reply(), doing=f"waiting for the reply to {command}"
            )
        except _SessionError:
            if not conn.proven and not reader.answered:
                raise _StaleConnectionError from None
            raise
        except SMTPResponseException as exc:
            text = f"bad reply from {target.describe} while {stage}: {exc.message}"
            raise _SessionError(_deferred("4.5.0", text)) from exc
        if not conn.proven:
            if reply.code == 421:  # an idle connection the peer is closing
                raise _StaleConnectionError
            conn.proven = True
        return reply

    @staticmethod
    def _mail_options(smtp: SMTP, job: _Job, use_utf8: bool) -> list[str]:
        envelope = job.envelope
        options: list[str] = []
        if smtp.supports_extension("size"):
            options.append(f"SIZE={job.size}")
        if envelope.body is BodyType.EIGHT_BIT and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        if use_utf8:
            options.append("SMTPUTF8")
        if smtp.supports_extension("dsn"):
            if envelope.ret is not None:
                options.append(f"RET={envelope.ret.value}")
            if envelope.envid:
                options.append(f"ENVID={xtext(envelope.envid)}")
        return options

    @staticmethod
    def _rcpt_options(smtp: SMTP, job: _Job, index: int) -> list[str]:
        if not smtp.supports_extension("dsn"):
            return []
        recipient = job.recipients[index]
        orcpt = recipient.orcpt
        original = job.originals[index]
        if not orcpt and original != job.addresses[index] and original.isascii():
            orcpt = f"rfc822;{original}"  # the address was rewritten on the way: keep the original
        return [p for p in (_notify_param(recipient), _orcpt_param(orcpt)) if p]

    async def _net(
        self, target: _Target, stage: str, operation: Awaitable[T], *, doing: str = ""
    ) -> T:
        """Await one SMTP exchange; a lost connection or a timeout is a session failure.
        `doing`: what the attempt is doing meanwhile, for `queue list` (default: `stage`
        and waiting for the reply)."""
        report_stage(f"{doing or stage + ', waiting for the reply'} ({target.describe})")
        try:
            return await operation
        except (SMTPTimeoutError, TimeoutError) as exc:
            text = f"conversation with {target.describe} timed out while {stage}"
            raise _SessionError(_deferred("4.4.2", text)) from exc
        except (SMTPServerDisconnected, OSError) as exc:
            text = f"lost connection with {target.describe} while {stage}: {_reason(exc)}"
            raise _SessionError(_deferred("4.4.2", text)) from exc

    # -- connections ---------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(
        self, target: _Target, pins: frozenset[str] | None, *, plaintext: bool
    ) -> AsyncIterator[_Connection]:
        """A connection to ``target`` for this caller alone: reused if one is idle."""
        key: _PoolKey = (target.address, target.port, pins)
        destination = self._destinations.get(key)
        if destination is None:
            destination = self._destinations[key] = _Destination(self._max_connections)
        destination.users += 1
        if destination.slots.locked():
            report_stage(f"waiting for a free connection to {target.describe}")
        try:
            async with destination.slots:
                conn = await self._reuse(destination, target)
                if conn is None:
                    conn = await self._open(target, pins, plaintext=plaintext)
                async with conn.lock:
                    try:
                        yield conn
                    except BaseException:
                        conn.broken = True
                        raise
                    finally:
                        await self._release(destination, conn)
        finally:
            destination.users -= 1

    async def _reuse(self, destination: _Destination, target: _Target) -> _Connection | None:
        now = self._clock()
        while destination.idle:
            conn = destination.idle.pop()  # the most recently used one
            if not conn.alive or now - conn.last_used > self._idle_timeout:
                conn.smtp.close()
                continue
            if conn.smtp.supports_extension("pipelining"):
                # No RSET round trip: the transaction's first reply shows whether it is alive
                # (if not, _StaleConnectionError: the recipients try another connection).
                conn.proven = False
                return conn
            try:
                await conn.smtp.rset(timeout=self._command_timeout)
            except (SMTPException, OSError) as exc:
                log.debug("smtp_out stale connection host=%s reason=%r", target.describe, exc)
                conn.smtp.close()
                continue
            conn.dirty = False
            return conn
        return None

    async def _release(self, destination: _Destination, conn: _Connection) -> None:
        if conn.broken or not conn.smtp.is_connected:
            conn.smtp.close()
            return
        if self._closed or conn.transactions >= self._max_transactions:
            await self._quit(conn)
            return
        conn.last_used = self._clock()
        destination.idle.append(conn)

    async def _quit(self, conn: _Connection) -> None:
        with suppress(SMTPException, OSError):
            await conn.smtp.quit(timeout=min(self._command_timeout, _QUIT_TIMEOUT))
        conn.smtp.close()

    async def _open(
        self, target: _Target, pins: frozenset[str] | None, *, plaintext: bool
    ) -> _Connection:
        """Connect, greet, EHLO, and STARTTLS as the policy says; raises _SessionError."""
        smtp = SMTP(
            hostname=target.address,
            port=target.port,
            local_hostname=self._helo,  # never socket.getfqdn(): it would ask the resolver
            timeout=self._command_timeout,
            start_tls=False,
            validate_certs=False,
            source_address=self._source,
        )
        try:
            greeting = await self._connect(smtp, target)
            self._check_loop(greeting.message, target, "greeted me")
            await self._hello(smtp, target)
            tls = False
            if pins is not None or (self._starttls and not plaintext):
                tls = await self._start_tls(smtp, target, pins)
        except _SessionError:
            smtp.close()
            raise
        except (SMTPException, OSError) as exc:
            smtp.close()
            text = (
                f"lost connection with {target.describe} while starting the session: {_reason(exc)}"
            )
            raise _SessionError(_deferred("4.4.2", text)) from exc
        return _Connection(smtp=smtp, tls=tls, last_used=self._clock())

    async def _connect(self, smtp: SMTP, target: _Target) -> SMTPResponse:
        report_stage(f"connecting to {target.describe}")
        try:
            return await smtp.connect(timeout=self._connect_timeout)
        except SMTPConnectResponseError as exc:
            verdict = _from_reply(exc.code, exc.message, "initial greeting", target)
            text = f"host {target.describe} refused to talk to me: {exc.code} {verdict.text}"
            verdict = _Verdict(verdict.outcome, exc.code, verdict.status, text, target.name)
            raise _SessionError(verdict) from exc
        except SMTPConnectTimeoutError as exc:
            text = f"connect to {target.describe}: timed out ({exc.message})"
            raise _SessionError(_deferred("4.4.1", text)) from exc
        except (SMTPException, OSError) as exc:  # refused, unreachable, reset before greeting
            text = f"connect to {target.describe}: {_reason(exc)}"
            raise _SessionError(_deferred("4.4.1", text)) from exc

    async def _hello(self, smtp: SMTP, target: _Target) -> None:
        """EHLO, or HELO when EHLO is refused; raises _SessionError when neither works."""
        try:
            reply = await self._net(target, "sending EHLO", smtp.ehlo())
        except SMTPHeloError as exc:
            if exc.code == 421 or not smtp.is_connected:
                raise _SessionError(_from_reply(exc.code, exc.message, "EHLO", target)) from exc
            try:
                reply = await self._net(target, "sending HELO", smtp.helo())
            except SMTPHeloError as helo_exc:
                verdict = _from_reply(helo_exc.code, helo_exc.message, "HELO", target)
                raise _SessionError(verdict) from helo_exc
        self._check_loop(reply.message, target, "replied to HELO/EHLO")

    def _check_loop(self, message: str, target: _Target, how: str) -> None:
        if _first_word(message) == self._helo:
            text = f"mail for {target.name} loops back to myself ({target.describe} {how} with my own hostname {self._helo})"
            raise _SessionError(
                _Verdict(Outcome.FAILED, 554, "5.4.6", text, target.name), final=True
            )

    async def _start_tls(self, smtp: SMTP, target: _Target, pins: frozenset[str] | None) -> bool:
        """STARTTLS per the policy; True when the session is now encrypted."""
        required = pins is not None
        if not smtp.supports_extension("starttls"):
            if required:
                text = f"TLS is required (pinned certificate), but {target.describe} does not offer STARTTLS"
                raise _SessionError(_deferred("4.7.5", text))
            return False
        report_stage(f"starting TLS with {target.describe}")
        try:
            await smtp.starttls(
                server_hostname=target.sni,
                tls_context=self._tls_context,
                timeout=self._command_timeout,
            )
        except SMTPResponseException as exc:  # STARTTLS answered, but not with 220
            if required or exc.code == 421 or not smtp.is_connected:
                text = f"STARTTLS refused by {target.describe}: {exc.code} {exc.message}"
                raise _SessionError(_deferred("4.7.5", text)) from exc
            log.info("smtp_out starttls_refused host=%s reply=%r", target.describe, exc.message)
            return False
        except (SMTPException, OSError) as exc:  # the handshake failed (ssl.SSLError: OSError)
            text = f"cannot start TLS with {target.describe}: handshake failure ({_reason(exc)})"
            raise _SessionError(
                _deferred("4.7.5", text), retry_plaintext=not required and self._fallback
            ) from exc
        if pins is not None:
            ssl_object = smtp.get_transport_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            seen = fingerprint_of(der) if der else "none"
            if seen not in pins:
                text = f"certificate of {target.describe} does not match the pinned fingerprint (sha256 {seen})"
                raise _SessionError(_deferred("4.7.5", text))
        try:
            await self._hello(smtp, target)
        except _SessionError as error:
            if error.final or required or not self._fallback:
                raise
            raise _SessionError(error.verdict, retry_plaintext=True) from error
        return True

    # -- the pool's housekeeping ---------------------------------------------------------

    def prune_idle(self) -> int:
        """Close idle connections past ``idle_timeout`` or dead; return how many."""
        now = self._clock()
        closed = 0
        for key, destination in list(self._destinations.items()):
            keep: list[_Connection] = []
            for conn in destination.idle:
                if conn.alive and now - conn.last_used <= self._idle_timeout:
                    keep.append(conn)
                else:
                    conn.smtp.close()
                    closed += 1
            destination.idle = keep
            if not keep and destination.users == 0:
                del self._destinations[key]
        return closed

    def idle_connections(self) -> int:
        """How many connections wait in the pool (for tests and the admin view)."""
        return sum(len(d.idle) for d in self._destinations.values())

    async def aclose(self) -> None:
        """QUIT and close every idle connection; connections in use close when released."""
        self._closed = True
        idle = [conn for d in self._destinations.values() for conn in d.idle]
        for destination in self._destinations.values():
            destination.idle = []
        await asyncio.gather(*(self._quit(conn) for conn in idle))
