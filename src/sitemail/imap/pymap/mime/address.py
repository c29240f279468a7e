"""Address lists of a header, read the way IMAP's ENVELOPE shows them (RFC 3501 7.4.2).

One job: turn the raw value of From/Sender/Reply-To/To/Cc/Bcc into address tuples
``(name, adl, mailbox, host)`` and group markers, never failing and never recursing, whatever
a sender wrote. The standard library's header parser raises on an empty or doubled Sender:
and recurses on nested comments; this reader is a single left-to-right scan, like Dovecot's.

Rules: a display name is the phrase before ``<...>``, else the last comment of the address
(``user@domain (Real Name)``); names stay as written (encoded-words are the client's to
decode; 8-bit bytes are passed through); ``<@route:user@domain>`` gives the route as the
adl; ``group: a@b, c@d;`` is ``(NIL NIL "group" NIL) ... (NIL NIL NIL NIL)``; an address
without ``@`` keeps its host empty rather than NIL (NIL host means a group marker).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EnvelopeAddress", "parse_addresses"]

_SPECIALS = frozenset(b'()<>,;:"@[]\\')
_SPACE = frozenset(b" \t\r\n")


@dataclass(frozen=True, slots=True)
class EnvelopeAddress:
    """One member of an ENVELOPE address list; ``host is None`` marks a group start (with the
    group's name in ``mailbox``) or, with ``mailbox`` None too, a group end."""

    name: bytes | None
    adl: bytes | None
    mailbox: bytes | None
    host: bytes | None


class _Scanner:
    """Tokens of an address list: words (atoms, quoted strings), comments and specials."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def skip_space(self) -> bytes | None:
        """Skip white space and comments; the last comment's text, if any."""
        comment = None
        data = self.data
        while self.pos < len(data):
            char = data[self.pos]
            if char in _SPACE:
                self.pos += 1
            elif char == 0x28:  # "("
                comment = self._comment()
            else:
                break
        return comment

    def _comment(self) -> bytes:
        data, depth, out = self.data, 0, bytearray()
        while self.pos < len(data):
            char = data[self.pos]
            self.pos += 1
            if char == 0x5C and self.pos < len(data):  # backslash
                out.append(data[self.pos])
                self.pos += 1
                continue
            if char == 0x28:
                depth += 1
                if depth == 1:
                    continue
            elif char == 0x29:
                depth -= 1
                if depth == 0:
                    break
            out.append(char)
        return bytes(out).strip()

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def word(self) -> bytes:
        """A quoted string (unquoted) or an atom (dots included) at the current position."""
        data = self.data
        if data[self.pos] == 0x22:  # '"'
            self.pos += 1
            out = bytearray()
            while self.pos < len(data) and data[self.pos] != 0x22:
                if data[self.pos] == 0x5C and self.pos + 1 < len(data):
                    self.pos += 1
                out.append(data[self.pos])
                self.pos += 1
            self.pos += 1  # the closing quote (or the end)
            return bytes(out)
        start = self.pos
        while self.pos < len(data) and data[self.pos] not in _SPECIALS | _SPACE:
            self.pos += 1
        if self.pos == start:  # a stray special: consume it so the scan always advances
            self.pos += 1
        return data[start : self.pos]


def _split(addr_spec: bytes) -> tuple[bytes, bytes]:
    mailbox, at, host = addr_spec.rpartition(b"@")
    return (mailbox, host) if at else (addr_spec, b"")


def _without_comments(data: bytes) -> bytes:
    """The bytes outside (possibly nested) comments; quoted strings kept as they are."""
    out, depth, quoted = bytearray(), 0, False
    for char in data:
        if char == 0x22 and not depth:
            quoted = not quoted
        elif not quoted and char == 0x28:
            depth += 1
            continue
        elif not quoted and char == 0x29 and depth:
            depth -= 1
            continue
        if not depth:
            out.append(char)
    return bytes(out)


def _angle(scan: _Scanner) -> tuple[bytes | None, bytes]:
    """``<[@route:]addr-spec>`` after its ``<``: the route (or None) and the addr-spec."""
    data = scan.data
    end = data.find(b">", scan.pos)
    inner = data[scan.pos : end if end >= 0 else len(data)]
    scan.pos = end + 1 if end >= 0 else len(data)
    inner = _without_comments(inner)
    inner = bytes(b for b in inner if b not in _SPACE)
    route = None
    if inner.startswith(b"@") and b":" in inner:
        route, _, inner = inner.partition(b":")
    return route, inner.replace(b'"', b"")


def parse_addresses(value: bytes) -> list[EnvelopeAddress]:
    """Every address and group marker of a header value, in order; [] for an empty one."""
    scan = _Scanner(value)
    out: list[EnvelopeAddress] = []
    in_group = False
    words: list[bytes] = []
    spec = bytearray()
    comment: bytes | None = None
    name: bytes | None = None
    route: bytes | None = None
    angle: bytes | None = None

    def flush() -> None:
        nonlocal words, spec, comment, name, route, angle
        if angle is not None:
            mailbox, host = _split(angle)
            display = name if name else comment
            out.append(EnvelopeAddress(display or None, route, mailbox, host))
        elif spec:
            mailbox, host = _split(bytes(spec))
            out.append(EnvelopeAddress(comment or None, None, mailbox, host))
        words, spec, comment, name, route, angle = [], bytearray(), None, None, None, None

    while True:
        found = scan.skip_space()
        if found is not None:
            comment = found
        char = scan.peek()
        if char is None:
            break
        if char == 0x2C:  # ","
            scan.pos += 1
            flush()
        elif char == 0x3A and angle is None:  # ":" starts a group named by the phrase
            scan.pos += 1
            out.append(EnvelopeAddress(None, None, b" ".join(words) or bytes(spec), None))
            in_group = True
            words, spec, comment = [], bytearray(), None
        elif char == 0x3B:  # ";" ends the group
            scan.pos += 1
            flush()
            if in_group:
                out.append(EnvelopeAddress(None, None, None, None))
                in_group = False
        elif char == 0x3C:  # "<"
            scan.pos += 1
            name = b" ".join(words)
            route, angle = _angle(scan)
        elif char in (0x40, 0x2E):  # "@" or "." inside an addr-spec
            scan.pos += 1
            spec.append(char)
        else:
            word = scan.word()
            words.append(word)
            spec += word
    flush()
    if in_group:
        out.append(EnvelopeAddress(None, None, None, None))
    return out
