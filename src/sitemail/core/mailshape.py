"""The shape of a message read from outside: bounded header sections and MIME structure.

One job: tell whether a message stays within the bounds every reader in sitemail relies on,
without the `email` package's parser (which recurses once per nested part and fails with a
RecursionError a few hundred levels down) and in time linear in the message; and read a
header section strictly, as a mail client will. Collaborators: the SMTP policy (every message
accepted on 25, 587 and 465), the replication codec (before it hands a message to the `email`
parser), the submission policy (its From checks). No I/O.

Bounds (`Bounds`; the defaults follow Postfix's, whose `mime_nesting_limit` is 100 and whose
`header_size_limit` is 100 KiB):
- MIME nesting: multipart and message/* parts inside each other, at most 100 deep (each
  level costs the `email` parser three frames of Python's 1,000);
- header fields per header section: 1,000; bytes per field (folded lines included): 100 KiB;
  bytes per header section: 1 MiB; MIME parts in the whole message: 10,000;
- a multipart's Content-Type field: 8 KiB (its boundary is read with the `email` package's own
  parameter parser, RFC 2231 included, which is quadratic in the field's length);
- header lines and lines starting with "--" (a delimiter's start) in the whole message:
  200,000. Those are the lines looked at in Python, a microsecond each; the rest of a body is
  skipped by the regular expression engine, so a message costs at most a fraction of a
  second whatever its shape (a legitimate one has a few hundred such lines).
Line length is the SMTP engine's (`[limits] line_length`, refused at DATA).

The structure is found as the `email` package's feed parser finds it: a part's header ends at
the first empty line; a multipart's parts start at lines "--boundary" (closing "--boundary--",
trailing white space allowed), any enclosing multipart's delimiter ending the inner ones;
message/* parts (except message/delivery-status, a list of header blocks) hold a whole message;
inside multipart/digest a part without Content-Type is message/rfc822. Where the two readings
could differ (a header line without a colon, which ends the `email` parser's header) this one
counts at least as deep, so a message it passes never makes the parser recurse further.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message

from sitemail.core.errors import MalformedMessageError

__all__ = [
    "BOUNDS",
    "Bounds",
    "HeaderField",
    "check_structure",
    "check_structure_chunks",
    "read_header",
]


@dataclass(frozen=True, slots=True)
class Bounds:
    mime_depth: int = 100
    header_fields: int = 1000
    field_bytes: int = 100 * 1024
    header_bytes: int = 1024 * 1024
    parts: int = 10_000
    content_type_bytes: int = 8 * 1024
    lines: int = 200_000  # header lines and lines starting with "--", in all


BOUNDS = Bounds()

_DELIMITER = re.compile(rb"^--([^\r\n]*)", re.MULTILINE)
_CONTENT_TYPE = re.compile(rb"content-type[ \t]*:", re.IGNORECASE)
_EMPTY_LINES = (b"\r\n", b"\n")


@dataclass(frozen=True, slots=True)
class _Open:
    """A container around the current position: a multipart (its boundary) or a message/*
    part (boundary None), which ends where an enclosing multipart's delimiter comes."""

    boundary: bytes | None
    digest: bool = False


def check_structure(raw: bytes, bounds: Bounds = BOUNDS) -> None:
    """Raise MalformedMessageError naming the first bound `raw` exceeds."""
    check_structure_chunks((raw,), bounds)


def check_structure_chunks(chunks: Iterable[bytes], bounds: Bounds = BOUNDS) -> None:
    """`check_structure` of a message read a piece at a time (a big one, from its spool
    file): the same answer for the same octets, holding one piece and one partial line at
    a time (a line's length is bounded by whoever received the message: SMTP's
    `line_length`). Reading stops as soon as no other part can start."""
    scan = _Scan(bounds)
    carry = b""
    for chunk in chunks:
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n") + 1  # the scan sees whole lines only
        if cut:
            scan.feed(data, cut)
            if scan.done:
                return
        carry = data[cut:]
    if carry:
        scan.feed(carry, len(carry))  # the last line, without its line end
    scan.finish()


@dataclass(slots=True)
class _Header:
    """A header section being read: its counts so far and its first Content-Type field."""

    fields: int = 0
    size: int = 0
    field_size: int = 0
    content_type: bytes = b""
    in_content_type: bool = False


class _Scan:
    """One pass over a message, fed whole lines in blocks: the containers open at the
    current position, the header section being read (None in a body), and the lines looked
    at one by one in Python so far (header lines, and lines that start like a delimiter but
    are none), which `Bounds.lines` caps: everything else is found by the regular
    expression engine, so the pass costs about a microsecond per such line."""

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.stack: list[_Open] = []
        self.lines = 0
        self.parts = 0
        self.header: _Header | None = None
        self.done = False  # no multipart is open: nothing further can start a part
        self._start_header()

    def feed(self, raw: bytes, end: int) -> None:
        """The lines of `raw[:end]` (it ends at a line end, but at the message's end)."""
        pos = 0
        while pos < end and not self.done:
            if self.header is not None:
                pos = self._header_lines(raw, pos, end)
            else:
                pos = self._body(raw, pos, end)

    def finish(self) -> None:
        """The message has ended: a header section it cut ends there."""
        while not self.done and self.header is not None:
            self._header_ended()

    def _start_header(self) -> None:
        self.parts += 1
        if self.parts > self.bounds.parts:
            raise MalformedMessageError(f"more than {self.bounds.parts} MIME parts")
        self.header = _Header()

    def _header_ended(self) -> None:
        """The container the part whose header just ended opens, then its body (or, for a
        message/* part, the header of the message it holds)."""
        assert self.header is not None
        stack = self.stack
        digest = bool(stack) and stack[-1].digest
        opened = _container(self.header.content_type, digest_parent=digest, bounds=self.bounds)
        self.header = None
        if opened is not None:
            if len(stack) >= self.bounds.mime_depth:
                raise MalformedMessageError(
                    f"MIME parts nested deeper than {self.bounds.mime_depth}"
                )
            stack.append(opened)
            if opened.boundary is None:
                self._start_header()  # message/*: a whole message's header starts right here

    def _count_line(self) -> None:
        self.lines += 1
        if self.lines > self.bounds.lines:
            raise MalformedMessageError(
                f"more than {self.bounds.lines} header lines and lines starting with '--'"
            )

    def _body(self, raw: bytes, pos: int, end: int) -> int:
        """Skip a body (a leaf, a preamble, an epilogue) up to the next part's header, or to
        `end`. Closing delimiters on the way end their multiparts."""
        stack = self.stack
        while True:
            if all(o.boundary is None for o in stack):
                self.done = True
                return end
            found = self._next_delimiter(raw, pos, end)
            if found is None:
                return end
            level, closing, pos = found
            del stack[level + 1 :]  # an enclosing delimiter ends every part inside it
            if not closing:
                self._start_header()
                return pos
            stack.pop()  # this multipart ends; its epilogue belongs to the part around it

    def _next_delimiter(self, raw: bytes, pos: int, end: int) -> tuple[int, bool, int] | None:
        """(stack level, closing, position after the line) of the next delimiter line of an
        open multipart in `raw[pos:end]`, the innermost one when two share a boundary."""
        levels = {o.boundary: i for i, o in enumerate(self.stack) if o.boundary is not None}
        if not levels:
            return None
        for match in _DELIMITER.finditer(raw, pos, end):
            text = match[1].rstrip(b" \t")  # the pattern stops before the line's CR
            if text in levels:
                return levels[text], False, _line_end(raw, match.end(), end)
            if text[-2:] == b"--" and text[:-2] in levels:
                return levels[text[:-2]], True, _line_end(raw, match.end(), end)
            self._count_line()
        return None

    def _header_lines(self, raw: bytes, pos: int, end: int) -> int:
        """Read the header section's lines in `raw[pos:end]`, checked against the bounds,
        up to its end (its empty line, or, as in the email parser, a delimiter line of an
        open multipart: the part's body is empty); the position reached."""
        bounds, header = self.bounds, self.header
        assert header is not None
        while pos < end:
            self._count_line()
            after = _line_end(raw, pos, end)
            line = raw[pos:after]
            if line in _EMPTY_LINES:
                self._header_ended()
                return after
            if line.startswith(b"--") and self._next_delimiter(line, 0, len(line)) is not None:
                self._header_ended()
                return pos
            header.size += len(line)
            if line[:1] in (b" ", b"\t"):
                header.field_size += len(line)
                if header.in_content_type:
                    header.content_type += line
            else:
                header.fields += 1
                header.field_size = len(line)
                header.in_content_type = (
                    not header.content_type and _CONTENT_TYPE.match(line) is not None
                )
                if header.in_content_type:
                    header.content_type = line  # the first one counts, as in the email parser
            if header.fields > bounds.header_fields:
                raise MalformedMessageError(f"more than {bounds.header_fields} header fields")
            if header.field_size > bounds.field_bytes:
                raise MalformedMessageError(f"a header field over {bounds.field_bytes} bytes")
            if header.size > bounds.header_bytes:
                raise MalformedMessageError(f"a header section over {bounds.header_bytes} bytes")
            pos = after
        return pos


def _line_end(raw: bytes, pos: int, end: int) -> int:
    """The position after the line `pos` is in (its LF included), at most `end`."""
    found = raw.find(b"\n", pos, end)
    return end if found < 0 else found + 1


def _container(field: bytes, *, digest_parent: bool, bounds: Bounds) -> _Open | None:
    """The container a part with this Content-Type field opens, None for a leaf."""
    value = field.partition(b":")[2].decode("latin-1")
    media = value.split(";", 1)[0].strip().lower()
    if not field and digest_parent:
        media = "message/rfc822"  # RFC 2046 5.1.5: the default type inside a digest
    if media.startswith("message/") and media != "message/delivery-status":
        return _Open(None)
    if not media.startswith("multipart/"):
        return None
    if len(field) > bounds.content_type_bytes:
        raise MalformedMessageError(
            f"a multipart Content-Type field over {bounds.content_type_bytes} bytes"
        )
    holder = Message()
    holder["Content-Type"] = " ".join(value.split())
    try:
        boundary = holder.get_boundary()
    except Exception as exc:  # e.g. TypeError on RFC 2231 parts mixed: the email parser fails too
        raise MalformedMessageError("a multipart Content-Type field that cannot be read") from exc
    if not boundary:
        return None  # the email parser reads a multipart without a boundary as text
    return _Open(boundary.encode("latin-1", "replace"), digest=media == "multipart/digest")


@dataclass(frozen=True, slots=True)
class HeaderField:
    name: str  # lower case
    value: str  # unfolded; UTF-8 decoded, any other byte kept as a surrogate


_FIELD_LINE = re.compile(rb"([\x21-\x39\x3b-\x7e]+):")


def read_header(raw: bytes, bounds: Bounds = BOUNDS) -> list[HeaderField]:
    """The message's header fields, read strictly: every line is a field ("name:" with a
    name of printable ASCII and no white space before the colon, RFC 5322 section 2.2) or
    the continuation of one (starting with white space); anything else, a NUL or a bare CR
    raises MalformedMessageError. Clients differ on such lines (one reads a line written
    `From :` as a From field, another ends the header at a line without a colon and shows the
    fields after it), so a checker that reads them one way can be fooled by a reader that
    reads them another."""
    fields: list[HeaderField] = []
    size = 0
    for number, line in enumerate(_header_lines(raw), 1):
        size += len(line) + 2
        if size > bounds.header_bytes:
            raise MalformedMessageError(f"a header section over {bounds.header_bytes} bytes")
        if b"\r" in line or b"\n" in line or b"\x00" in line:
            raise MalformedMessageError(f"header line {number} holds a bare CR or LF, or a NUL")
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise MalformedMessageError("the header starts with a continuation line")
            last = fields[-1]
            fields[-1] = HeaderField(last.name, last.value + _text(line))
            continue
        match = _FIELD_LINE.match(line)
        if match is None:
            raise MalformedMessageError(
                f"header line {number} is not a field (a name, then a colon with no space "
                "before it)"
            )
        if len(fields) >= bounds.header_fields:
            raise MalformedMessageError(f"more than {bounds.header_fields} header fields")
        name = match.group(1).decode("ascii").lower()
        fields.append(HeaderField(name, _text(line[match.end() :])))
    return fields


def _header_lines(raw: bytes) -> list[bytes]:
    """The header's lines without their CRLF (SMTP has refused bare CR and LF already)."""
    if raw.startswith(b"\r\n"):
        return []
    end = raw.find(b"\r\n\r\n")
    head = raw[:end] if end >= 0 else raw.removesuffix(b"\r\n")
    return head.split(b"\r\n") if head else []


def _text(value: bytes) -> str:
    """UTF-8 (RFC 6532) when it is; other bytes kept as surrogates, one for one."""
    return value.decode("utf-8", "surrogateescape")
