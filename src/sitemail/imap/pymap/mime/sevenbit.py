"""Binary parts of an appended message made sendable as text (RFC 3516 section 4.3).

One job: a message APPENDed with binary octets (NUL) in a part cannot be sent back in a
BODY[] literal, which must not hold NUL. Such parts are stored base64-encoded instead, with
their Content-Transfer-Encoding changed to match, as Dovecot does; BINARY[] decodes them back
to the octets the client sent. Messages without NUL are stored exactly as received.
"""

from __future__ import annotations

import base64

from . import MessageContent

__all__ = ["seven_bit"]

_LINE = 76  # RFC 2045 6.8: base64 lines of at most 76 characters


def _base64_lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"".join(encoded[i : i + _LINE] + b"\r\n" for i in range(0, len(encoded), _LINE))


def seven_bit(raw: bytes) -> bytes:
    """The message with every leaf part that holds NUL re-encoded as base64."""
    if b"\x00" not in raw:
        return raw
    content = MessageContent.parse(raw)
    edits: list[tuple[int, int, bytes]] = []  # (start, end, replacement), in message order
    for part in content.walk():
        body = part.body
        if body.has_nested or b"\x00" not in bytes(body):
            continue
        lines = part.header._lines
        start = lines[0][0] if lines else body._lines[0][0]
        kept = b"".join(
            bytes(value)
            for name, value in part.header.folded
            if name != b"content-transfer-encoding"
        )
        header = kept + b"Content-Transfer-Encoding: base64\r\n\r\n"
        end = body._lines[-1][2] if body._lines else start
        edits.append((start, end, header + _base64_lines(bytes(body))))
    out = bytearray()
    position = 0
    for start, end, replacement in edits:
        out += raw[position:start] + replacement
        position = end
    out += raw[position:]
    return bytes(out)
