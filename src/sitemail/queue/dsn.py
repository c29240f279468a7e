"""Delivery status notifications: one RFC 3464 report, built as bytes, from values.

One job: turn "these recipients of that message failed / are delayed / were delivered" into the
complete RFC 5322 message the queue sends back to the original sender (RFC 3461 section 6,
RFC 3462/6522 multipart/report, RFC 3464 message/delivery-status, RFC 6533 for UTF-8).

Collaborators: the queue manager supplies the original envelope, the spooled content and one
`DsnEntry` per recipient; it queues what `build_dsn` returns from the null sender. Nothing here
does I/O or reads a clock: `now` is an argument, so the same inputs give the same bytes.

Invariants:
- never a report for the null sender (so never a DSN for a DSN) and never for a recipient that
  did not ask for this kind of notice (NOTIFY, RFC 3461 section 4.1): then the answer is None;
- the original is attached byte for byte, never decoded or re-folded: full (`message/rfc822`)
  for a failure unless RET=HDRS, headers only (`text/rfc822-headers`) for delay and success
  notices, for RET=HDRS, and when the original is larger than `max_original`;
- UTF-8 headers in the original select `message/global` / `message/global-headers`, and
  non-ASCII addresses or diagnostics select `message/global-delivery-status` (RFC 6533);
- every line we write ends in CRLF and stays under 998 octets; no value we were given can add
  a header line (CR, LF and other controls become spaces);
- the multipart boundary occurs in none of the parts.
"""

from __future__ import annotations

import hashlib
import quopri
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from enum import StrEnum

from sitemail.core.envelope import BodyType, Envelope, EnvelopeRecipient, Notify, Ret
from sitemail.core.errors import MalformedMessageError
from sitemail.core.mailshape import BOUNDS, Bounds, check_structure

__all__ = [
    "DEFAULT_MAX_ORIGINAL",
    "DsnAction",
    "DsnEntry",
    "DsnKind",
    "build_dsn",
    "dsn_body_type",
    "is_dsn_worthy",
]

DEFAULT_MAX_ORIGINAL = 1024 * 1024
"""Originals larger than this (octets) come back as headers only."""


class DsnKind(StrEnum):
    """Which notice a report is; each answers one NOTIFY keyword of RFC 3461."""

    FAILURE = "failure"
    DELAY = "delay"
    SUCCESS = "success"  # delivered, relayed to a non-DSN host, or expanded

    @property
    def notify(self) -> Notify:
        """The NOTIFY keyword a recipient must have asked for (or defaulted to)."""
        return _NOTIFY[self]


_NOTIFY = {
    DsnKind.FAILURE: Notify.FAILURE,
    DsnKind.DELAY: Notify.DELAY,
    DsnKind.SUCCESS: Notify.SUCCESS,
}


class DsnAction(StrEnum):
    """The Action field of RFC 3464 section 2.3.3."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"
    EXPANDED = "expanded"


@dataclass(frozen=True, slots=True)
class DsnEntry:
    """One recipient's line in a report.

    `action` is a `DsnAction` (a plain string such as "failed" is accepted and converted; any
    other string is a programming error and raises ValueError). `status` is the RFC 3463 code
    ("5.1.1"); a malformed one is reported as the generic code of the action's class.
    `diagnostic` is the SMTP reply that explains it ("550 5.1.1 no such user") or our own text.
    """

    recipient: EnvelopeRecipient
    action: str
    status: str
    diagnostic: str = ""
    remote_mta: str = ""  # the host that answered, "" when we decided ourselves
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None  # reported for delayed recipients only

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", DsnAction(self.action))


def is_dsn_worthy(envelope: Envelope) -> bool:
    """Whether any DSN could be sent for this envelope.

    False for the null reverse path (bounces, DSNs, MDNs: RFC 5321 section 4.5.5, RFC 3461
    section 6.2) and when every recipient said NOTIFY=NEVER.
    """
    if not envelope.sender:
        return False
    return any(r.wants(kind.notify) for r in envelope.recipients for kind in DsnKind)


def dsn_body_type(message: bytes) -> BodyType:
    """The BODY= a report needs when it is sent on: 8BITMIME when it carries 8-bit octets."""
    return BodyType.SEVEN_BIT if message.isascii() else BodyType.EIGHT_BIT


def build_dsn(
    *,
    reporting_mta: str,
    envelope: Envelope,
    queue_id: str,
    message_id: str,
    arrival: datetime,
    content: bytes,
    entries: Sequence[DsnEntry],
    kind: DsnKind,
    now: datetime,
    postmaster: str = "",
    max_original: int = DEFAULT_MAX_ORIGINAL,
    original_size: int | None = None,
) -> bytes | None:
    """The complete report for `entries` of one message, or None when none is to be sent.

    `envelope`, `queue_id`, `message_id`, `arrival` and `content` describe the original as
    the queue holds it; `content` may be only the start of a big message (its header at
    least) when `original_size` gives the whole size: such an original is never returned
    whole. Entries whose recipient did not ask for `kind` are left out; None when
    no entry remains or the original sender is the null sender. `postmaster` is the From
    address (default MAILER-DAEMON@`reporting_mta`). Naive datetimes are taken as UTC.
    """
    if not envelope.sender:
        return None
    wanted = [e for e in entries if e.recipient.wants(kind.notify)]
    if not wanted:
        return None
    host = _clean(reporting_mta).replace(" ", "") or "localhost"
    size = len(content) if original_size is None else original_size
    original = _original_part(envelope, content, kind, max_original, size)
    status_part = _status_part(host, envelope, queue_id, arrival, wanted)
    text_part = _text_part(
        host,
        envelope=envelope,
        queue_id=queue_id,
        message_id=message_id,
        arrival=arrival,
        entries=wanted,
        kind=kind,
        original=original,
    )
    parts = (text_part, status_part, original.part)

    digest = hashlib.sha256()
    for piece in (host, queue_id, kind.value, _date(now), envelope.sender):
        digest.update(piece.encode("utf-8", "replace") + b"\0")
    for part in parts:
        digest.update(part.headers + part.body)
    token = digest.hexdigest()
    boundary = _boundary(token, parts)

    sender_address = _clean(envelope.sender)
    from_address = _clean(postmaster) or f"MAILER-DAEMON@{host}"
    message_token = f"{_aware(now).strftime('%Y%m%d%H%M%S%f')}.{token[:20]}"
    eight_bit = any(not (p.headers + p.body).isascii() for p in parts)
    head = [
        _field("From", f"Mail Delivery System <{from_address}>"),
        _field("To", f"<{sender_address}>"),
        _field("Subject", _SUBJECTS[kind]),
        _field("Date", _date(now)),
        _field("Message-ID", f"<{message_token}@{_id_right(host)}>"),
        _field("Auto-Submitted", "auto-replied"),
        _field("MIME-Version", "1.0"),
        _field(
            "Content-Type",
            f'multipart/report; report-type=delivery-status; boundary="{boundary}"',
        ),
    ]
    if eight_bit:
        head.append(_field("Content-Transfer-Encoding", "8bit"))
    out = [
        *head,
        b"\r\n",
        b"This is a MIME-encapsulated message.\r\n",
    ]
    delimiter = b"\r\n--" + boundary.encode("ascii")
    for part in parts:
        out += [delimiter, b"\r\n", part.headers, b"\r\n", part.body]
    out += [delimiter, b"--\r\n"]
    return b"".join(out)


# -- the parts ----------------------------------------------------------------------------

_SUBJECTS = {
    DsnKind.FAILURE: "Undelivered Mail Returned to Sender",
    DsnKind.DELAY: "Delayed Mail (still being retried)",
    DsnKind.SUCCESS: "Successful Mail Delivery Report",
}

_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_GENERIC_STATUS = {
    DsnAction.FAILED: "5.0.0",
    DsnAction.DELAYED: "4.0.0",
    DsnAction.DELIVERED: "2.0.0",
    DsnAction.RELAYED: "2.0.0",
    DsnAction.EXPANDED: "2.0.0",
}


@dataclass(frozen=True, slots=True)
class _Part:
    headers: bytes  # the part's header lines, each ending in CRLF (no blank line)
    body: bytes


@dataclass(frozen=True, slots=True)
class _Original:
    part: _Part
    full: bool
    why_headers: str  # "" when full; else the sentence that explains it


def _original_part(
    envelope: Envelope, content: bytes, kind: DsnKind, cap: int, size: int
) -> _Original:
    """The original, whole or its header section, untouched (RFC 3461 section 4.3, RFC 6522);
    `size` is the original's (`content` may hold only its start)."""
    header_section = _header_section(content)
    utf8_headers = not header_section.isascii()
    wants_full = kind is DsnKind.FAILURE and envelope.ret is not Ret.HDRS
    whole = wants_full and size <= cap and len(content) == size  # `content` is all of it
    shape = _shape_fault(content) if whole else ""
    if whole and not shape:
        ctype = "message/global" if utf8_headers else "message/rfc822"
        headers = _field("Content-Description", "Undelivered Message") + _field(
            "Content-Type", ctype
        )
        if not content.isascii():
            headers += _field("Content-Transfer-Encoding", "8bit")
        return _Original(_Part(headers, content), full=True, why_headers="")

    if shape:
        why = f"Your message is beyond what this system returns whole ({shape}), so only its "
        why += "headers are attached."
    elif wants_full:
        why = (
            f"Your message was {size} bytes, more than the {cap} bytes this system "
            "returns, so only its headers are attached."
        )
    elif kind is DsnKind.FAILURE:
        why = "As you asked (RET=HDRS), only the headers of your message are attached."
    else:
        why = "The headers of your message are attached."
    if len(header_section) > cap:
        cut = header_section.rfind(b"\n", 0, cap) + 1
        header_section = header_section[:cut]
        why += f" They were cut at {cap} bytes."
    ctype = "message/global-headers" if utf8_headers else "text/rfc822-headers"
    headers = _field("Content-Description", "Undelivered Message Headers") + _field(
        "Content-Type", ctype
    )
    if not header_section.isascii():
        headers += _field("Content-Transfer-Encoding", "8bit")
    return _Original(_Part(headers, header_section), full=False, why_headers=why)


# The report wraps the original two levels down (multipart/report, message/rfc822): whoever
# reads the report must not meet more nesting than core.mailshape allows any message.
_ATTACHED = Bounds(mime_depth=BOUNDS.mime_depth - 2)


def _shape_fault(content: bytes) -> str:
    """Why the original cannot be attached whole ("" when it can)."""
    try:
        check_structure(content, _ATTACHED)
    except MalformedMessageError as exc:
        return exc.message
    return ""


def _header_section(content: bytes) -> bytes:
    """The header lines of a message, with their line endings, without the blank line."""
    if content.startswith((b"\r\n", b"\n")):
        return b""
    end = re.search(rb"\n\r?\n", content)
    if end is None:
        return content if content.endswith(b"\n") or not content else content + b"\r\n"
    return content[: end.start() + 1]


def _status_part(
    host: str,
    envelope: Envelope,
    queue_id: str,
    arrival: datetime,
    entries: Sequence[DsnEntry],
) -> _Part:
    """The machine-readable report (RFC 3464 section 2), one block per recipient."""
    per_message: list[tuple[str, str]] = [("Reporting-MTA", f"dns; {host}")]
    if envelope.envid:
        per_message.append(("Original-Envelope-Id", _clean(envelope.envid)))
    if queue_id:
        per_message.append(("X-Sitemail-Queue-ID", _clean(queue_id)))
    per_message.append(("Arrival-Date", _date(arrival)))
    blocks = [per_message]
    for entry in entries:
        block: list[tuple[str, str]] = []
        if entry.recipient.orcpt:
            block.append(("Original-Recipient", _orcpt(entry.recipient.orcpt)))
        address = _clean(entry.recipient.address)
        address_type = "rfc822" if address.isascii() else "utf-8"
        block.append(("Final-Recipient", f"{address_type}; {address}"))
        block.append(("Action", entry.action))
        block.append(("Status", _status(entry)))
        if entry.remote_mta.strip():
            block.append(("Remote-MTA", f"dns; {_clean(entry.remote_mta)}"))
        if entry.diagnostic.strip():
            block.append(("Diagnostic-Code", f"smtp; {_clean(entry.diagnostic)}"))
        if entry.last_attempt is not None:
            block.append(("Last-Attempt-Date", _date(entry.last_attempt)))
        if entry.action is DsnAction.DELAYED and entry.will_retry_until is not None:
            block.append(("Will-Retry-Until", _date(entry.will_retry_until)))
        blocks.append(block)
    body = b"\r\n".join(b"".join(_field(n, v) for n, v in block) for block in blocks)
    utf8 = not body.isascii()
    ctype = "message/global-delivery-status" if utf8 else "message/delivery-status"
    headers = _field("Content-Description", "Delivery report") + _field("Content-Type", ctype)
    if utf8:
        headers += _field("Content-Transfer-Encoding", "8bit")
    return _Part(headers, body)


def _text_part(
    host: str,
    *,
    envelope: Envelope,
    queue_id: str,
    message_id: str,
    arrival: datetime,
    entries: Sequence[DsnEntry],
    kind: DsnKind,
    original: _Original,
) -> _Part:
    """The explanation for people (RFC 6522 section 3: the first part)."""
    paragraphs = [f"This is the mail system at {host}."]
    if kind is DsnKind.FAILURE:
        paragraphs.append(
            "Your message could not be delivered to one or more of its recipients. "
            "The mail system has given up on the recipients listed below."
        )
    elif kind is DsnKind.DELAY:
        paragraphs.append(
            "Your message has not yet been delivered to the recipients listed below. "
            "The mail system is still trying; you do not need to send it again. "
            "You will be told if it finally fails."
        )
    else:
        paragraphs.append(
            "Your message was delivered to the recipients listed below, or handed to a "
            "system that will not report further on its delivery."
        )
    about = f"Message-ID {_clean(message_id)}, " if message_id.strip() else ""
    paragraphs.append(
        f"The message ({about}queue id {_clean(queue_id)}) from <{_clean(envelope.sender)}> "
        f"arrived on {_date(arrival)}."
    )
    lines: list[str] = []
    for paragraph in paragraphs:
        lines += _wrap(paragraph, "")
        lines.append("")
    for entry in entries:
        lines.extend(_describe(entry))
        lines.append("")
    lines += _wrap(
        original.why_headers or "Your message is attached below, as it was received.", ""
    )
    text = "\n".join(lines) + "\n"
    data = text.encode("utf-8", "replace")
    if data.isascii():
        headers = _field("Content-Description", "Notification") + _field(
            "Content-Type", "text/plain; charset=us-ascii"
        )
        return _Part(headers, data.replace(b"\n", b"\r\n"))
    headers = (
        _field("Content-Description", "Notification")
        + _field("Content-Type", "text/plain; charset=utf-8")
        + _field("Content-Transfer-Encoding", "quoted-printable")
    )
    return _Part(headers, quopri.encodestring(data).replace(b"\n", b"\r\n"))


def _describe(entry: DsnEntry) -> list[str]:
    """A recipient's lines in the explanation."""
    address = _clean(entry.recipient.address)
    lines = [f"<{address}>: {entry.action}, status {_status(entry)}"]
    orcpt = _orcpt(entry.recipient.orcpt) if entry.recipient.orcpt else ""
    original = orcpt.split(";", 1)[-1].strip()
    if original and original.lower() != address.lower():
        lines += _wrap(f"originally addressed to {original}", "    ")
    if entry.diagnostic.strip():
        said = f"{_clean(entry.remote_mta)} said" if entry.remote_mta.strip() else "the reason was"
        lines += _wrap(f"{said}: {_clean(entry.diagnostic)}", "    ")
    if entry.action is DsnAction.DELAYED and entry.will_retry_until is not None:
        lines += _wrap(f"will be retried until {_date(entry.will_retry_until)}", "    ")
    return lines


# -- small helpers ------------------------------------------------------------------------

_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")
_LONGEST_WORD = 900  # a header line must stay under 998 octets, whatever we were given


def _clean(value: str) -> str:
    """One line of text: controls (CR, LF, tab...) become single spaces; no lone surrogates."""
    value = value.encode("utf-8", "replace").decode("utf-8")
    words = _CONTROLS.sub(" ", value).split(" ")
    out: list[str] = []
    for word in words:
        rest = word
        while len(rest.encode("utf-8")) > _LONGEST_WORD:
            out.append(rest[: _LONGEST_WORD // 4])
            rest = rest[_LONGEST_WORD // 4 :]
        if rest:
            out.append(rest)
    return " ".join(out)


def _field(name: str, value: str) -> bytes:
    """`Name: value` CRLF, folded at spaces before 78 octets where it can be."""
    lines: list[str] = []
    line, has_word = f"{name}:", False
    for word in value.split(" "):
        if has_word and len((line + " " + word).encode("utf-8")) > 78:
            lines.append(line)
            line = ""
        line, has_word = f"{line} {word}", True
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(
        text,
        width=76,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [indent.rstrip()]


def _status(entry: DsnEntry) -> str:
    status = entry.status.strip()
    if _STATUS.fullmatch(status):
        return status
    return _GENERIC_STATUS[DsnAction(entry.action)]


def _orcpt(orcpt: str) -> str:
    """ORCPT as given ("rfc822;user@example.com") in the field's `type; address` form."""
    address_type, sep, address = _clean(orcpt).partition(";")
    if not sep:
        return f"rfc822; {address_type.strip()}"
    return f"{address_type.strip()}; {address.strip()}"


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _date(moment: datetime) -> str:
    return format_datetime(_aware(moment))


def _id_right(host: str) -> str:
    right = re.sub(r"[^A-Za-z0-9.\-\[\]:]", "", host)
    return right or "localhost"


def _boundary(token: str, parts: Iterable[_Part]) -> str:
    """A boundary that none of the parts contains (RFC 2046 section 5.1.1)."""
    bodies = [p.body for p in parts]
    attempt = 0
    while True:
        boundary = f"=_dsn_{token[:32]}_{attempt}"
        marker = b"--" + boundary.encode("ascii")
        if not any(marker in body for body in bodies):
            return boundary
        attempt += 1
