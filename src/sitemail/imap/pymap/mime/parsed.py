from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from email.headerregistry import (
    AddressHeader,
    BaseHeader,
    ContentDispositionHeader,
    ContentTransferEncodingHeader,
    ContentTypeHeader,
    DateHeader,
    HeaderRegistry,
    SingleAddressHeader,
    UnstructuredHeader,
)
from email.policy import SMTP
from typing import Any, ClassVar, TypeAlias, TypeVar, cast

__all__ = ["ParsedHeaders"]

_Headers: TypeAlias = Mapping[bytes, Sequence[Sequence[bytes]]]
_H = TypeVar("_H")


class ParsedHeaders(Mapping[bytes, Sequence[BaseHeader]]):
    """The mapping of message headers, parsed on-demand using a
    :class:`~email.headerregistry.HeaderRegistry`. Also provides typed
    properties for standard headers used in IMAP processing.

    """

    _registry: ClassVar[HeaderRegistry] = HeaderRegistry()
    _fallback: ClassVar[HeaderRegistry] = HeaderRegistry(use_default_map=False)

    __slots__ = ["_headers", "_parsed"]

    def __init__(self, headers: _Headers) -> None:
        super().__init__()
        self._headers = headers
        self._parsed: dict[bytes, Sequence[BaseHeader]] = {}

    def __getitem__(self, name: bytes) -> Sequence[BaseHeader]:
        name_lower = name.lower()
        parsed = self._parsed.get(name_lower)
        if parsed is not None:
            return parsed
        values = self._headers[name_lower]
        self._parsed[name_lower] = parsed = list(self._parse(values))
        return parsed

    def __len__(self) -> int:
        return len(self._headers)

    def __contains__(self, name: Any) -> bool:
        if not isinstance(name, bytes):
            raise TypeError(name)
        return name.lower() in self._headers

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._headers.keys())

    @classmethod
    def _parse(cls, values: Sequence[Sequence[bytes]]) -> Iterable[BaseHeader]:
        for value in values:
            lines = [line.decode("ascii", "surrogateescape") for line in value]
            name, text = SMTP.header_source_parse(lines)
            name = name.strip()  # "From : x" names the From header, as in every reader
            try:
                yield cls._registry(name, text)
            except Exception:  # a sender's bytes must never break a FETCH
                # The standard library's header parsers raise on some broken values (an empty
                # or doubled Sender:, deep comments); such a header counts as unstructured.
                yield cls._fallback(name, text)

    def _typed(self, name: bytes, kind: type[_H]) -> _H | None:
        """The first header of that name, if it parsed as the expected kind."""
        try:
            found = self[name][0]
        except (KeyError, IndexError):
            return None
        return found if isinstance(found, kind) else None

    def __repr__(self) -> str:
        return repr(dict(self))

    @property
    def content_type(self) -> ContentTypeHeader | None:
        """The ``Content-Type`` header."""
        return self._typed(b"content-type", ContentTypeHeader)

    @property
    def date(self) -> DateHeader | None:
        """The ``Date`` header."""
        return self._typed(b"date", DateHeader)

    @property
    def subject(self) -> UnstructuredHeader | None:
        """The ``Subject`` header."""
        try:
            return cast(UnstructuredHeader, self[b"subject"][0])
        except (KeyError, IndexError):
            return None

    @property
    def from_(self) -> Sequence[AddressHeader] | None:
        """The ``From`` header."""
        try:
            return cast(Sequence[AddressHeader], self[b"from"])
        except KeyError:
            return None

    @property
    def sender(self) -> Sequence[SingleAddressHeader] | None:
        """The ``Sender`` header."""
        try:
            return cast(Sequence[SingleAddressHeader], self[b"sender"])
        except KeyError:
            return None

    @property
    def reply_to(self) -> Sequence[AddressHeader] | None:
        """The ``Reply-To`` header."""
        try:
            return cast(Sequence[AddressHeader], self[b"reply-to"])
        except KeyError:
            return None

    @property
    def to(self) -> Sequence[AddressHeader] | None:
        """The ``To`` header."""
        try:
            return cast(Sequence[AddressHeader], self[b"to"])
        except KeyError:
            return None

    @property
    def cc(self) -> Sequence[AddressHeader] | None:
        """The ``Cc`` header."""
        try:
            return cast(Sequence[AddressHeader], self[b"cc"])
        except KeyError:
            return None

    @property
    def bcc(self) -> Sequence[AddressHeader] | None:
        """The ``Bcc`` header."""
        try:
            return cast(Sequence[AddressHeader], self[b"bcc"])
        except KeyError:
            return None

    @property
    def in_reply_to(self) -> UnstructuredHeader | None:
        """The ``In-Reply-To`` header."""
        try:
            return cast(UnstructuredHeader, self[b"in-reply-to"][0])
        except (KeyError, IndexError):
            return None

    @property
    def references(self) -> UnstructuredHeader | None:
        """The ``References`` header."""
        try:
            return cast(UnstructuredHeader, self[b"references"][0])
        except (KeyError, IndexError):
            return None

    @property
    def message_id(self) -> UnstructuredHeader | None:
        """The ``Message-Id`` header."""
        try:
            return cast(UnstructuredHeader, self[b"message-id"][0])
        except (KeyError, IndexError):
            return None

    @property
    def content_disposition(self) -> ContentDispositionHeader | None:
        """The ``Content-Disposition`` header."""
        return self._typed(b"content-disposition", ContentDispositionHeader)

    @property
    def content_language(self) -> UnstructuredHeader | None:
        """The ``Content-Language`` header."""
        try:
            return cast(UnstructuredHeader, self[b"content-language"][0])
        except (KeyError, IndexError):
            return None

    @property
    def content_location(self) -> UnstructuredHeader | None:
        """The ``Content-Location`` header."""
        try:
            return cast(UnstructuredHeader, self[b"content-location"][0])
        except (KeyError, IndexError):
            return None

    @property
    def content_id(self) -> UnstructuredHeader | None:
        """The ``Content-Id`` header."""
        try:
            return cast(UnstructuredHeader, self[b"content-id"][0])
        except (KeyError, IndexError):
            return None

    @property
    def content_description(self) -> UnstructuredHeader | None:
        """The ``Content-Description`` header."""
        try:
            return cast(UnstructuredHeader, self[b"content-description"][0])
        except (KeyError, IndexError):
            return None

    @property
    def content_transfer_encoding(self) -> ContentTransferEncodingHeader | None:
        """The ``Content-Transfer-Encoding`` header."""
        return self._typed(b"content-transfer-encoding", ContentTransferEncodingHeader)
