from __future__ import annotations

from collections.abc import Mapping, Sequence
from email.headerregistry import (
    ContentDispositionHeader,
    ContentTransferEncodingHeader,
    UnstructuredHeader,
)
from itertools import chain
from typing import Any, SupportsBytes, TypeAlias

from ...bytes import Writeable, WriteStream
from ...mime.address import EnvelopeAddress, parse_addresses
from ..primitives import List, Nil, Number, String

__all__ = [
    "BodyStructure",
    "ContentBodyStructure",
    "EnvelopeStructure",
    "MessageBodyStructure",
    "MultipartBodyStructure",
    "TextBodyStructure",
]

_CTEHeader: TypeAlias = ContentTransferEncodingHeader


class _Concatenated(Writeable):
    def __init__(self, parts: Sequence[SupportsBytes]) -> None:
        super().__init__()
        self.parts = parts

    def write(self, writer: WriteStream) -> None:
        for part in self.parts:
            writer.write(bytes(part))

    def __bytes__(self) -> bytes:
        return b"".join([bytes(part) for part in self.parts])


class _AddressList(Writeable):
    """An ENVELOPE address list: NIL, or the addresses with no space between them."""

    def __init__(self, addresses: Sequence[EnvelopeAddress]) -> None:
        super().__init__()
        self.addresses = addresses

    def write(self, writer: WriteStream) -> None:
        writer.write(bytes(self))

    def __bytes__(self) -> bytes:
        if not self.addresses:
            return b"NIL"
        items = [
            bytes(
                List(
                    [
                        String.build(a.name),
                        String.build(a.adl),
                        String.build(a.mailbox),
                        String.build(a.host),
                    ]
                )
            )
            for a in self.addresses
        ]
        return b"(" + b"".join(items) + b")"


class _Disposition(Writeable):
    """body-fld-dsp (RFC 3501 9): ``("attachment" ("filename" "a.bin"))`` or NIL."""

    def __init__(self, header: ContentDispositionHeader | None) -> None:
        super().__init__()
        self.header = header

    def write(self, writer: WriteStream) -> None:
        writer.write(bytes(self))

    def __bytes__(self) -> bytes:
        header = self.header
        kind = getattr(header, "content_disposition", None)
        if header is None or not kind:
            return b"NIL"
        return bytes(List([String.build(kind), _ParamsList(header.params)]))


class _ParamsList(Writeable):
    def __init__(self, params: Mapping[str, Any] | None) -> None:
        super().__init__()
        self.params = params

    @property
    def _value(self) -> Writeable:
        if self.params:
            values = [
                (String.build(key), String.build(value)) for key, value in self.params.items()
            ]
            return List(chain.from_iterable(values))
        return Nil()

    def write(self, writer: WriteStream) -> None:
        self._value.write(writer)

    def __bytes__(self) -> bytes:
        return bytes(self._value)


class EnvelopeStructure(Writeable):
    """Builds the response to an `RFC 3501 7.4.2
    <https://tools.ietf.org/html/rfc3501#section-7.4.2>`_ FETCH ENVELOPE
    request, from the headers' raw values (unfolded; None when the header is absent).

    Dates, subjects and ids are given as written (no decoding: encoded-words are the
    client's to decode); address lists are read by `parse_addresses`, and Sender and
    Reply-To default to From when absent or empty, as the RFC requires.

    """

    def __init__(
        self,
        date: bytes | None,
        subject: bytes | None,
        from_: bytes | None,
        sender: bytes | None,
        reply_to: bytes | None,
        to: bytes | None,
        cc: bytes | None,
        bcc: bytes | None,
        in_reply_to: bytes | None,
        message_id: bytes | None,
    ) -> None:
        super().__init__()
        self.date = date
        self.subject = subject
        self.from_ = from_
        self.sender = sender
        self.reply_to = reply_to
        self.to = to
        self.cc = cc
        self.bcc = bcc
        self.in_reply_to = in_reply_to
        self.message_id = message_id

    @classmethod
    def empty(cls) -> EnvelopeStructure:
        """Return an empty envelope structure object.

        See Also:
            `RFC 2180 4.1.3
            <https://tools.ietf.org/html/rfc2180#section-4.1.3>`_

        """
        return _EmptyEnvelopeStructure()

    @property
    def _value(self) -> Writeable:
        from_ = parse_addresses(self.from_ or b"")
        return List(
            [
                String.build(self.date),
                String.build(self.subject),
                _AddressList(from_),
                _AddressList(parse_addresses(self.sender or b"") or from_),
                _AddressList(parse_addresses(self.reply_to or b"") or from_),
                _AddressList(parse_addresses(self.to or b"")),
                _AddressList(parse_addresses(self.cc or b"")),
                _AddressList(parse_addresses(self.bcc or b"")),
                String.build(self.in_reply_to),
                String.build(self.message_id),
            ]
        )

    def write(self, writer: WriteStream) -> None:
        self._value.write(writer)

    def __bytes__(self) -> bytes:
        return bytes(self._value)


class BodyStructure(Writeable):
    """Parent class for the response to an `RFC 3501 7.4.2
    <https://tools.ietf.org/html/rfc3501#section-7.4.2>`_ FETCH BODYSTRUCTURE
    request. This class should not be used directly.

    Args:
        maintype: Main-type of the ``Content-Type:`` header.
        subtype: Sub-type of the ``Content-Type:`` header.
        content_type_params: Parameters from the ``Content-Type:`` header.
        content_disposition: ``Content-Disposition:`` header.
        content_language: ``Content-Language:`` header.
        content_location: ``Content-Location:`` header.

    """

    def __init__(
        self,
        maintype: str,
        subtype: str,
        content_type_params: Mapping[str, Any] | None,
        content_disposition: ContentDispositionHeader | None,
        content_language: UnstructuredHeader | None,
        content_location: UnstructuredHeader | None,
    ) -> None:
        super().__init__()
        self.maintype = maintype
        self.subtype = subtype
        self.content_type_params = content_type_params
        self.content_disposition = content_disposition
        self.content_language = content_language
        self.content_location = content_location

    @classmethod
    def empty(cls) -> BodyStructure:
        """Return an empty body structure object.

        See Also:
            `RFC 2180 4.1.3
            <https://tools.ietf.org/html/rfc2180#section-4.1.3>`_

        """
        return _EmptyBodyStructure()

    @property
    def _value(self) -> List:
        raise NotImplementedError

    def write(self, writer: WriteStream) -> None:
        self._value.write(writer)

    def __bytes__(self) -> bytes:
        return bytes(self._value)

    @property
    def extended(self) -> Writeable:
        """The body structure attributes with extension data."""
        raise NotImplementedError


class MultipartBodyStructure(BodyStructure):
    """:class:`BodyStructure` sub-class for ``multipart/*`` messages. The
    response is made up of the BODYSTRUCTUREs of all sub-parts.

    Args:
        subtype: Sub-type of the ``Content-Type:`` header.
        content_type_params: Parameters from the ``Content-Type:`` header.
        content_disposition: ``Content-Disposition:`` header.
        content_language: ``Content-Language:`` header.
        content_location: ``Content-Location:`` header.
        parts: Sub-part body structure objects.

    """

    def __init__(
        self,
        subtype: str,
        content_type_params: Mapping[str, Any] | None,
        content_disposition: ContentDispositionHeader | None,
        content_language: UnstructuredHeader | None,
        content_location: UnstructuredHeader | None,
        parts: Sequence[BodyStructure],
    ) -> None:
        super().__init__(
            "multipart",
            subtype,
            content_type_params,
            content_disposition,
            content_language,
            content_location,
        )
        self.parts = parts

    # Rendered straight to bytes, a few frames per level: a structure nested MAX_DEPTH deep
    # must not come near the interpreter's recursion limit.

    def __bytes__(self) -> bytes:
        parts = b"".join(bytes(part) for part in self.parts)
        return b"(%b %b)" % (parts, bytes(String.build(self.subtype)))

    @property
    def extended(self) -> Writeable:
        """The body structure attributes with extension data."""
        parts = b"".join(bytes(part.extended) for part in self.parts)
        rest = [
            String.build(self.subtype),
            _ParamsList(self.content_type_params),
            _Disposition(self.content_disposition),
            String.build(self.content_language),
            String.build(self.content_location),
        ]
        return Writeable.wrap(b"(%b %b)" % (parts, b" ".join(bytes(item) for item in rest)))

    def write(self, writer: WriteStream) -> None:
        writer.write(bytes(self))


class ContentBodyStructure(BodyStructure):
    """:class:`BodyStructure` sub-class for any content type that does not
    fit the other sub-classes.

    Args:
        maintype: Main-type of the ``Content-Type:`` header.
        subtype: Sub-type of the ``Content-Type:`` header.
        content_type_params: Parameters from the ``Content-Type:`` header.
        content_disposition: ``Content-Disposition:`` header.
        content_language: ``Content-Language:`` header.
        content_location: ``Content-Location:`` header.
        content_id: ``Content-Id:`` header.
        content_description: ``Content-Description:`` header.
        content_transfer_encoding: ``Content-Transfer-Encoding:`` header.
        body_md5: MD5 hash of the body content.
        size: Size of the message body, in bytes.

    """

    def __init__(
        self,
        maintype: str,
        subtype: str,
        content_type_params: Mapping[str, Any] | None,
        content_disposition: ContentDispositionHeader | None,
        content_language: UnstructuredHeader | None,
        content_location: UnstructuredHeader | None,
        content_id: UnstructuredHeader | None,
        content_description: UnstructuredHeader | None,
        content_transfer_encoding: _CTEHeader | None,
        body_md5: str | None,
        size: int,
    ) -> None:
        super().__init__(
            maintype,
            subtype,
            content_type_params,
            content_disposition,
            content_language,
            content_location,
        )
        self.content_id = content_id
        self.content_description = content_description
        self.content_transfer_encoding = content_transfer_encoding
        self.body_md5 = body_md5
        self.size = size

    @property
    def _value(self) -> List:
        return List(
            [
                String.build(self.maintype),
                String.build(self.subtype),
                _ParamsList(self.content_type_params),
                String.build(self.content_id),
                String.build(self.content_description),
                String.build(self.content_transfer_encoding, fallback=b"7BIT"),
                Number(self.size),
            ]
        )

    @property
    def extended(self) -> List:
        """The body structure attributes with extension data."""
        return List(
            [
                String.build(self.maintype),
                String.build(self.subtype),
                _ParamsList(self.content_type_params),
                String.build(self.content_id),
                String.build(self.content_description),
                String.build(self.content_transfer_encoding, fallback=b"7BIT"),
                Number(self.size),
                String.build(self.body_md5),
                _Disposition(self.content_disposition),
                String.build(self.content_language),
                String.build(self.content_location),
            ]
        )


class TextBodyStructure(ContentBodyStructure):
    """:class:`BodyStructure` sub-class for ``text/*`` messages.

    Args:
        subtype: Sub-type of the ``Content-Type:`` header.
        content_type_params: Parameters from the ``Content-Type:`` header.
        content_disposition: ``Content-Disposition:`` header.
        content_language: ``Content-Language:`` header.
        content_location: ``Content-Location:`` header.
        content_id: ``Content-Id:`` header.
        content_description: ``Content-Description:`` header.
        content_transfer_encoding: ``Content-Transfer-Encoding:`` header.
        body_md5: MD5 hash of the body content.
        size: Size of the message body, in bytes.
        lines: Length of the message body, in lines.

    """

    def __init__(
        self,
        subtype: str,
        content_type_params: Mapping[str, Any] | None,
        content_disposition: ContentDispositionHeader | None,
        content_language: UnstructuredHeader | None,
        content_location: UnstructuredHeader | None,
        content_id: UnstructuredHeader | None,
        content_description: UnstructuredHeader | None,
        content_transfer_encoding: _CTEHeader | None,
        body_md5: str | None,
        size: int,
        lines: int,
    ) -> None:
        super().__init__(
            "text",
            subtype,
            content_type_params,
            content_disposition,
            content_language,
            content_location,
            content_id,
            content_description,
            content_transfer_encoding,
            body_md5,
            size,
        )
        self.lines = lines

    @property
    def _value(self) -> List:
        return List(
            [
                String.build(self.maintype),
                String.build(self.subtype),
                _ParamsList(self.content_type_params),
                String.build(self.content_id),
                String.build(self.content_description),
                String.build(self.content_transfer_encoding, fallback=b"7BIT"),
                Number(self.size),
                Number(self.lines),
            ]
        )

    @property
    def extended(self) -> List:
        """The body structure attributes with extension data."""
        return List(
            [
                String.build(self.maintype),
                String.build(self.subtype),
                _ParamsList(self.content_type_params),
                String.build(self.content_id),
                String.build(self.content_description),
                String.build(self.content_transfer_encoding, fallback=b"7BIT"),
                Number(self.size),
                Number(self.lines),
                String.build(self.body_md5),
                _Disposition(self.content_disposition),
                String.build(self.content_language),
                String.build(self.content_location),
            ]
        )


class MessageBodyStructure(ContentBodyStructure):
    """:class:`BodyStructure` sub-class for ``message/rfc822`` messages.

    Args:
        content_type_params: Parameters from the ``Content-Type:`` header.
        content_disposition: ``Content-Disposition:`` header.
        content_language: ``Content-Language:`` header.
        content_location: ``Content-Location:`` header.
        content_id: ``Content-Id:`` header.
        content_description: ``Content-Description:`` header.
        content_transfer_encoding: ``Content-Transfer-Encoding:`` header.
        body_md5: MD5 hash of the body content.
        size: Size of the message body, in bytes.
        lines: Length of the message body, in lines.
        envelope_structure: Contained message's envelope structure.
        body_structure: Contained message's body structure.

    """

    def __init__(
        self,
        content_type_params: Mapping[str, Any] | None,
        content_disposition: ContentDispositionHeader | None,
        content_language: UnstructuredHeader | None,
        content_location: UnstructuredHeader | None,
        content_id: UnstructuredHeader | None,
        content_description: UnstructuredHeader | None,
        content_transfer_encoding: _CTEHeader | None,
        body_md5: str | None,
        size: int,
        lines: int,
        envelope_structure: EnvelopeStructure,
        body_structure: BodyStructure,
    ) -> None:
        super().__init__(
            "message",
            "rfc822",
            content_type_params,
            content_disposition,
            content_language,
            content_location,
            content_id,
            content_description,
            content_transfer_encoding,
            body_md5,
            size,
        )
        self.lines = lines
        self.envelope_structure = envelope_structure
        self.body_structure = body_structure

    @property
    def _value(self) -> List:
        return List(
            [
                String.build(self.maintype),
                String.build(self.subtype),
                _ParamsList(self.content_type_params),
                String.build(self.content_id),
                String.build(self.content_description),
                String.build(self.content_transfer_encoding, fallback=b"7BIT"),
                Number(self.size),
                self.envelope_structure,
                self.body_structure,
                Number(self.lines),
            ]
        )

    @property
    def extended(self) -> List:
        """The body structure attributes with extension data."""
        return List(
            [
                String.build(self.maintype),
                String.build(self.subtype),
                _ParamsList(self.content_type_params),
                String.build(self.content_id),
                String.build(self.content_description),
                String.build(self.content_transfer_encoding, fallback=b"7BIT"),
                Number(self.size),
                self.envelope_structure,
                self.body_structure.extended,
                Number(self.lines),
                String.build(self.body_md5),
                _Disposition(self.content_disposition),
                String.build(self.content_language),
                String.build(self.content_location),
            ]
        )


class _EmptyEnvelopeStructure(EnvelopeStructure):
    def __init__(self) -> None:
        super().__init__(None, None, None, None, None, None, None, None, None, None)


class _EmptyBodyStructure(TextBodyStructure):
    def __init__(self) -> None:
        super().__init__("plain", None, None, None, None, None, None, None, None, 0, 0)
