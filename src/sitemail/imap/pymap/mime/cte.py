from __future__ import annotations

import base64
import re
from abc import ABCMeta, abstractmethod
from email.headerregistry import ContentTransferEncodingHeader

from ..bytes import Writeable
from . import MessageBody, MessageHeader

__all__ = ["MessageDecoder"]

_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def _qp_octet(match: re.Match[bytes]) -> bytes:
    return bytes((int(match.group(1), 16),))


_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


class MessageDecoder(metaclass=ABCMeta):
    """Decodes a :class:`~pymap.mime.MessageBody` as decided by its
    ``Content-Transfer-Encoding`` header.

    Attributes:
        registry (Dict[str, :class:`MessageDecoder`]): Registry of custom
            decoders. Keys should be lower-case.

    """

    registry: dict[str, MessageDecoder] = {}

    @classmethod
    def of(cls, msg_header: MessageHeader) -> MessageDecoder:
        """Return a decoder from the message header object.

        See Also:
            :meth:`.of_cte`

        Args:
            msg_header: The message header object.

        """
        cte_hdr = msg_header.parsed.content_transfer_encoding
        return cls.of_cte(cte_hdr)

    @classmethod
    def of_cte(cls, header: ContentTransferEncodingHeader | None) -> MessageDecoder:
        """Return a decoder from the CTE header value.

        There is built-in support for ``7bit``, ``8bit``, ``quoted-printable``,
        and ``base64`` CTE header values. Decoders can be added or overridden
        with the :attr:`.registry` dictionary.

        Args:
            header: The CTE header value.

        """
        if header is None:
            return _NoopDecoder()
        hdr_str = str(header).lower()
        custom = cls.registry.get(hdr_str)
        if custom is not None:
            return custom
        if hdr_str == "quoted-printable":
            return _QuotedPrintableDecoder()
        if hdr_str == "base64":
            return _Base64Decoder()
        # 7bit, 8bit, binary (RFC 3516: sent as is) and unknown encodings: the octets as stored
        return _NoopDecoder()

    @abstractmethod
    def decode(self, body: MessageBody) -> Writeable:
        """Decode and return the decoded body of the message.

        Args:
            body: The message body.

        """
        ...


class _NoopDecoder(MessageDecoder):
    def decode(self, body: MessageBody) -> Writeable:
        return body


class _QuotedPrintableDecoder(MessageDecoder):
    """RFC 2045 6.7: trailing white space is dropped, '=' at a line's end joins lines,
    '=XX' is an octet; anything else (a stray '=') is kept as written."""

    def decode(self, body: MessageBody) -> Writeable:
        out = bytearray()
        for line in bytes(body).splitlines(keepends=True):
            text = line.rstrip(b"\r\n")
            ending = line[len(text) :]
            text = text.rstrip(b" \t")
            soft = text.endswith(b"=")
            out += _QP_ESCAPE.sub(_qp_octet, text[:-1] if soft else text)
            if not soft:
                out += ending
        return Writeable.wrap(bytes(out))


class _Base64Decoder(MessageDecoder):
    def decode(self, body: MessageBody) -> Writeable:
        raw = bytes(body)
        # Senders break base64 (stray characters, lost padding): decode what is there.
        data = bytes(b for b in raw if b in _B64_ALPHABET).split(b"=", 1)[0]  # '=' ends it
        data = data[: len(data) - len(data) % 4 if len(data) % 4 == 1 else len(data)]
        return Writeable.wrap(base64.b64decode(data + b"=" * (-len(data) % 4)))
