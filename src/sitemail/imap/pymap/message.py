"""Base implementations of the :mod:`pymap.interfaces.message` interfaces."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from email.header import decode_header, make_header
from typing import Any, Final

from .bytes import Writeable
from .flags import SessionFlags
from .interfaces.message import CachedMessage, FlagsKey, LoadedMessageInterface, MessageInterface
from .mime import MessageContent
from .mime.cte import MessageDecoder
from .parsing.response.fetch import (
    BodyStructure,
    ContentBodyStructure,
    EnvelopeStructure,
    MessageBodyStructure,
    MultipartBodyStructure,
    TextBodyStructure,
)
from .parsing.specials import FetchRequirement, Flag, ObjectId

__all__ = ["BaseLoadedMessage", "BaseMessage"]


class _NoContent(ValueError):
    # Thrown when message contents were requested, but the backend did not or
    # could not load them.

    def __init__(self) -> None:
        super().__init__("Message content not available.")


class BaseMessage(MessageInterface, CachedMessage):
    """Message metadata such as UID, permanent flags, and when the message
    was added to the system.

    Args:
        uid: The UID of the message.
        internal_date: The internal date of the message.
        permanent_flags: Permanent flags for the message.
        email_id: The message content identifier for the message.
        thread_id: The thread identifier for the message.
        expunged: True if this message has been expunged from the mailbox.
        modseq: The message's modification sequence (CONDSTORE, RFC 7162).

    """

    __slots__ = [
        "_email_id",
        "_flags_key",
        "_modseq",
        "_permanent_flags",
        "_thread_id",
        "expunged",
        "internal_date",
        "uid",
    ]

    def __init__(
        self,
        uid: int,
        internal_date: datetime,
        permanent_flags: Iterable[Flag],
        *,
        email_id: ObjectId | None = None,
        thread_id: ObjectId | None = None,
        expunged: bool = False,
        modseq: int = 0,
    ) -> None:
        super().__init__()
        self.uid: Final = uid
        self._modseq = modseq
        self.internal_date: Final = internal_date
        self.expunged: Final = expunged
        self._email_id = email_id or ObjectId(None)
        self._thread_id = thread_id or ObjectId(None)
        self._permanent_flags = frozenset(permanent_flags or ())
        self._flags_key = (uid, self._permanent_flags)

    @property
    def email_id(self) -> ObjectId:
        return self._email_id

    @property
    def thread_id(self) -> ObjectId:
        return self._thread_id

    @property
    def permanent_flags(self) -> frozenset[Flag]:
        return self._permanent_flags

    @permanent_flags.setter
    def permanent_flags(self, permanent_flags: frozenset[Flag]) -> None:
        self._permanent_flags = permanent_flags
        self._flags_key = (self.uid, permanent_flags)

    @property
    def modseq(self) -> int:
        return self._modseq

    @modseq.setter
    def modseq(self, modseq: int) -> None:
        self._modseq = modseq

    def get_flags(self, session_flags: SessionFlags) -> frozenset[Flag]:
        msg_sflags = session_flags.get(self.uid)
        if msg_sflags:
            return self._permanent_flags | msg_sflags
        return self._permanent_flags

    @property
    def flags_key(self) -> FlagsKey:
        return self._flags_key

    def __repr__(self) -> str:
        type_name = type(self).__name__
        return f"<{type_name} uid={self.uid} flags={self.permanent_flags}>"


_FOLD = re.compile(rb"\r?\n(?=[ \t])")


class _RawHeaders:
    """A part's header values as written: after the colon, unfolded, trimmed."""

    def __init__(self, msg: MessageContent) -> None:
        self._values: dict[bytes, list[bytes]] = {}
        for name, field in msg.header.folded:
            value = bytes(field).split(b":", 1)[-1]
            self._values.setdefault(name, []).append(_FOLD.sub(b"", value).strip())

    def first(self, name: bytes) -> bytes | None:
        found = self._values.get(name)
        return found[0] if found else None

    def all(self, name: bytes) -> list[bytes]:
        return self._values.get(name, [])

    def joined(self, name: bytes) -> bytes | None:
        found = self._values.get(name)
        return b", ".join(found) if found else None


def _decoded(value: bytes) -> str:
    text = value.decode("utf-8", "replace")
    try:
        return str(make_header(decode_header(text)))
    except (ValueError, LookupError, UnicodeError):  # a broken encoded-word: as written
        return text


class BaseLoadedMessage(LoadedMessageInterface):
    """The loaded message content, implemented using an instance of
    :class:`~pymap.mime.MessageContent`.

    Args:
        message: The message object.
        requirement: The fetch requirement of the loaded content.
        content: The MIME-parsed message content, if available.

    """

    __slots__ = ["_content", "_message", "_requirement"]

    def __init__(
        self,
        message: MessageInterface,
        requirement: FetchRequirement,
        content: MessageContent | None,
    ) -> None:
        super().__init__()
        self._message = message
        self._requirement = requirement
        self._content = content

    @property
    def message(self) -> MessageInterface:
        return self._message

    @property
    def requirement(self) -> FetchRequirement:
        return self._requirement

    @property
    def content(self) -> MessageContent:
        if self._content is None:
            raise _NoContent()
        return self._content

    def __bytes__(self) -> bytes:
        return bytes(self.content)

    def _get_subpart(self, section: Sequence[int] | None) -> MessageContent:
        """The part a section number names (RFC 3501 6.4.5): part n of a message is the n-th
        part of its multipart body, or its one body if it is not multipart (n = 1); past a
        message/rfc822 part, numbering continues inside the message it encloses."""
        part = self.content
        for depth, number in enumerate(section or ()):
            if depth and part.is_rfc822 and part.body.nested:
                part = part.body.nested[0]  # into the enclosed message
            nested = part.body.nested
            if part.body.content_type.maintype == "multipart" and nested:
                if not 1 <= number <= len(nested):
                    raise IndexError(number)
                part = nested[number - 1]
            elif number != 1:
                raise IndexError(number)
        return part

    def get_header(self, name: bytes) -> Sequence[str]:
        """Every value of the header, unfolded, encoded-words decoded, comments kept (so
        SEARCH FROM finds the name in ``user@domain (Real Name)``)."""
        try:
            values = _RawHeaders(self.content).all(name.lower())
        except _NoContent:
            return []
        return [_decoded(value) for value in values]

    def get_headers(self, section: Sequence[int]) -> Writeable:
        try:
            msg = self._get_subpart(section)
        except (IndexError, _NoContent):
            return Writeable.empty()
        else:
            return msg.header

    def get_body(self, section: Sequence[int] | None = None, binary: bool = False) -> Writeable:
        try:
            msg = self._get_subpart(section)
        except (IndexError, _NoContent):
            return Writeable.empty()
        if binary:
            decoded = MessageDecoder.of(msg.header).decode(msg.body)
            if not section:
                return Writeable.concat((msg.header, decoded))
            return decoded
        if not section:
            return msg
        return msg.body

    def get_message_headers(
        self,
        section: Sequence[int] | None = None,
        subset: Collection[bytes] | None = None,
        inverse: bool = False,
    ) -> Writeable:
        try:
            msg = self._get_subpart(section)
        except (IndexError, _NoContent):
            return Writeable.empty()
        if section:
            if msg.is_rfc822:
                msg = msg.body.nested[0]
            else:
                return Writeable.empty()
        if subset is None:
            return msg.header
        headers = Writeable.concat(
            Writeable.wrap(bytes(value))
            for key, value in msg.header.folded
            if inverse != (key.upper() in subset)
        )
        return Writeable.concat((headers, Writeable.wrap(b"\r\n")))

    def get_message_text(self, section: Sequence[int] | None = None) -> Writeable:
        try:
            msg = self._get_subpart(section)
        except (IndexError, _NoContent):
            return Writeable.empty()
        if section:
            if msg.is_rfc822:
                msg = msg.body.nested[0]
            else:
                return Writeable.empty()
        return msg.body

    @classmethod
    def _get_size_with_lines(cls, msg: MessageContent) -> tuple[int, int]:
        # RFC 3501 7.4.2: the size and lines of the body, without the part's own header
        body = bytes(msg.body)
        return len(body), body.count(b"\n")

    def get_size(self, section: Sequence[int] | None = None) -> int:
        try:
            msg = self._get_subpart(section)
        except (IndexError, _NoContent):
            return 0
        return len(msg)

    def get_envelope_structure(self) -> EnvelopeStructure:
        try:
            return self._get_envelope_structure(self.content)
        except _NoContent:
            return EnvelopeStructure.empty()

    def get_body_structure(self) -> BodyStructure:
        try:
            return self._get_body_structure(self.content)
        except _NoContent:
            return BodyStructure.empty()

    @classmethod
    def _get_envelope_structure(cls, msg: MessageContent) -> EnvelopeStructure:
        raw = _RawHeaders(msg)
        return EnvelopeStructure(
            raw.first(b"date"),
            raw.first(b"subject"),
            raw.joined(b"from"),
            raw.joined(b"sender"),
            raw.joined(b"reply-to"),
            raw.joined(b"to"),
            raw.joined(b"cc"),
            raw.joined(b"bcc"),
            raw.first(b"in-reply-to"),
            raw.first(b"message-id"),
        )

    @classmethod
    def _get_params(cls, msg: MessageContent) -> Mapping[str, Any]:
        return msg.body.content_type.params

    @classmethod
    def _get_body_structure(cls, msg: MessageContent) -> BodyStructure:
        parsed = msg.header.parsed
        maintype = msg.body.content_type.maintype
        subtype = msg.body.content_type.subtype
        params = cls._get_params(msg)
        disposition = parsed.content_disposition
        language = parsed.content_language
        location = parsed.content_location
        if maintype == "multipart" and not msg.body.nested:
            # no parts found (no boundary, or nested beyond MAX_DEPTH): one opaque body
            maintype, subtype, params = "application", "octet-stream", {}
        elif maintype == "multipart":
            sub_body_structs = [cls._get_body_structure(part) for part in msg.body.nested]
            return MultipartBodyStructure(
                subtype, params, disposition, language, location, sub_body_structs
            )
        content_id = parsed.content_id
        content_desc = parsed.content_description
        content_encoding = parsed.content_transfer_encoding
        if maintype == "message" and subtype == "rfc822" and msg.body.nested:
            sub_msg = msg.body.nested[0]
            sub_env_struct = cls._get_envelope_structure(sub_msg)
            sub_body_struct = cls._get_body_structure(sub_msg)
            size, lines = cls._get_size_with_lines(msg)
            return MessageBodyStructure(
                params,
                disposition,
                language,
                location,
                content_id,
                content_desc,
                content_encoding,
                None,
                size,
                lines,
                sub_env_struct,
                sub_body_struct,
            )
        if maintype == "text":
            size, lines = cls._get_size_with_lines(msg)
            return TextBodyStructure(
                subtype,
                params,
                disposition,
                language,
                location,
                content_id,
                content_desc,
                content_encoding,
                None,
                size,
                lines,
            )
        size = len(msg.body)
        return ContentBodyStructure(
            maintype,
            subtype,
            params,
            disposition,
            language,
            location,
            content_id,
            content_desc,
            content_encoding,
            None,
            size,
        )

    def contains(self, value: bytes, *, with_headers: bool = False) -> bool:
        try:
            content = self.content
        except _NoContent:
            return False
        pattern = re.compile(re.escape(value), re.I)
        for part in content.walk():
            if with_headers and pattern.search(bytes(part.header)) is not None:
                return True
            is_text = part.body.content_type.maintype == "text"
            if is_text and pattern.search(bytes(part.body)) is not None:
                return True
        return False
