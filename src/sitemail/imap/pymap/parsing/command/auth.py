from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import ClassVar

from .. import EndLine, Params, Space
from ..exceptions import InvalidContent, NotParseable, UnexpectedType
from ..message import AppendMessage
from ..primitives import Atom, List, LiteralString, String
from ..specials import DateTime, ExtensionOption, ExtensionOptions, Flag, Mailbox, StatusAttribute
from ..specials.mailbox import decode_pattern
from . import CommandAuth

__all__ = [
    "AppendCommand",
    "CreateCommand",
    "DeleteCommand",
    "EnableCommand",
    "ExamineCommand",
    "LSubCommand",
    "ListCommand",
    "RenameCommand",
    "SelectCommand",
    "StatusCommand",
    "SubscribeCommand",
    "UnsubscribeCommand",
]


class CommandMailboxArg(CommandAuth):
    def __init__(self, tag: bytes, mailbox: Mailbox) -> None:
        super().__init__(tag)
        self.mailbox_obj = mailbox

    @property
    def mailbox(self) -> str:
        return str(self.mailbox_obj)

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[CommandMailboxArg, memoryview]:
        _, buf = Space.parse(buf, params)
        mailbox, buf = Mailbox.parse(buf, params)
        _, buf = EndLine.parse(buf, params)
        return cls(params.tag, mailbox), buf


class AppendCommand(CommandAuth):
    """The ``APPEND`` command adds a new message to a mailbox.

    See Also:
        `RFC 3502 6.3.11.
        <https://tools.ietf.org/html/rfc3502#section-6.3.11>`_

    Args:
        tag: The command tag.
        mailbox: The mailbox name.
        messages: List of tuples containing the raw messages bytes, the
            flags, and the internal timestamp to assign to the message.
        cancelled: True if the append command was cancelled.

    """

    command = b"APPEND"

    def __init__(
        self,
        tag: bytes,
        mailbox: Mailbox,
        messages: Iterable[AppendMessage],
        cancelled: bool = False,
        error: Exception | None = None,
    ) -> None:
        super().__init__(tag)
        self.mailbox_obj = mailbox
        self.messages: Sequence[AppendMessage] = list(messages)
        self.cancelled = cancelled
        self.error = error

    @property
    def mailbox(self) -> str:
        return str(self.mailbox_obj)

    @classmethod
    def _parse_msg(
        cls, name: str, buf: memoryview, params: Params
    ) -> tuple[AppendMessage | None, memoryview]:
        _, buf = Space.parse(buf, params)
        try:
            params_copy = params.copy(expected=[Flag])
            flag_list, buf = List.parse(buf, params_copy)
        except UnexpectedType:
            raise
        except NotParseable:
            flags: frozenset[Flag] = frozenset()
        else:
            flags = frozenset(flag_list.get_as(Flag))
            _, buf = Space.parse(buf, params)
        try:
            date_time_p, buf = DateTime.parse(buf, params)
        except InvalidContent:
            raise
        except NotParseable:
            date_time = None
        else:
            date_time = date_time_p.value
            _, buf = Space.parse(buf, params)
        options_list: list[ExtensionOption] = []
        while True:
            try:
                option, buf = ExtensionOption.parse(buf, params)
            except NotParseable:
                break
            else:
                options_list.append(option)
        options = ExtensionOptions(options_list)
        binary = False
        try:
            message, buf = LiteralString.parse(buf, params)
        except NotParseable:
            if options:
                literal = b""
            else:
                raise
        else:
            literal = message.value
            binary = message.binary
            if literal == b"":
                return None, buf
        append_msg = AppendMessage(literal, date_time, flags, options, binary)
        return append_msg, buf

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[AppendCommand, memoryview]:
        _, buf = Space.parse(buf, params)
        mailbox, buf = Mailbox.parse(buf, params)
        messages: list[AppendMessage] = []
        error: Exception | None = None
        cancelled = False
        while True:
            try:
                next_msg, buf = cls._parse_msg(mailbox.value, buf, params)
            except NotParseable:
                if not messages:
                    raise
                break
            else:
                if next_msg is None:
                    cancelled = True
                    break
                messages.append(next_msg)
        _, buf = EndLine.parse(buf, params)
        return cls(params.tag, mailbox, messages, cancelled, error), buf


class CreateCommand(CommandMailboxArg):
    """The ``CREATE`` command creates a new mailbox, optionally with special-use attributes
    (``CREATE name (USE (\\Archive))``, RFC 6154 3)."""

    command = b"CREATE"

    _use_pattern = re.compile(rb" *\( *USE +\(([^()]*)\) *\)", re.I)
    _attr_pattern = re.compile(rb"\\[A-Za-z0-9_-]+")

    def __init__(
        self,
        tag: bytes,
        mailbox: Mailbox,
        options: ExtensionOptions,
        special_use: Sequence[bytes] = (),
    ) -> None:
        super().__init__(tag, mailbox)
        self.options = options
        #: the special-use attributes asked for, as given (``\\Archive``)
        self.special_use = special_use

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[CreateCommand, memoryview]:
        _, buf = Space.parse(buf, params)
        mailbox, buf = Mailbox.parse(buf, params)
        use = cls._use_pattern.match(buf)
        special_use: list[bytes] = []
        if use is not None:
            special_use = use.group(1).split()
            if not all(cls._attr_pattern.fullmatch(attr) for attr in special_use):
                raise NotParseable(buf)
            buf = buf[use.end(0) :]
        options, buf = ExtensionOptions.parse(buf, params)
        _, buf = EndLine.parse(buf, params)
        return cls(params.tag, mailbox, options, special_use), buf


class DeleteCommand(CommandMailboxArg):
    """The ``DELETE`` command deletes a mailbox."""

    command = b"DELETE"


class ListCommand(CommandAuth):
    """The ``LIST`` command lists existing mailboxes.

    Args:
        tag: The command tag.
        ref_name: The mailbox reference name.
        filter_: The mailbox filter string.

    """

    command = b"LIST"

    #: All mailboxes may be listed, not only subscribed mailboxes.
    only_subscribed: ClassVar[bool] = False

    _list_mailbox_pattern = re.compile(
        rb"[\x21\x23-\x27\x2A-\x5B"
        rb"\x5D-\x7A\x7C-\x7E]+"
    )

    #: LIST-EXTENDED selection and return options understood (RFC 5258, RFC 6154 5)
    _options_pattern = re.compile(rb" *\( *((?:SPECIAL-USE)?) *\)", re.I)
    _return_pattern = re.compile(rb" +RETURN *\( *((?:SPECIAL-USE)?) *\)", re.I)

    def __init__(
        self, tag: bytes, ref_name: str, filter_: str, *, special_use_only: bool = False
    ) -> None:
        super().__init__(tag)
        self.ref_name = ref_name
        self.filter = filter_
        #: ``LIST (SPECIAL-USE) ...``: only mailboxes with a special-use attribute
        self.special_use_only = special_use_only

    @classmethod
    def _parse_selection(cls, buf: memoryview) -> tuple[bool, memoryview]:
        """``(SPECIAL-USE)`` or ``()`` before the reference name (LIST only)."""
        if cls.only_subscribed:
            return False, buf
        match = cls._options_pattern.match(buf)
        if match is None:
            return False, buf
        return bool(match.group(1)), buf[match.end(0) :]

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[ListCommand, memoryview]:
        _, buf = Space.parse(buf, params)
        special_use_only, buf = cls._parse_selection(buf)
        if special_use_only or bytes(buf[:1]) == b" ":
            _, buf = Space.parse(buf, params)
        ref_name, buf = Mailbox.parse(buf, params)
        _, buf = Space.parse(buf, params)
        match = cls._list_mailbox_pattern.match(buf)
        if match:
            filter_raw = match.group(0)
            buf = buf[match.end(0) :]
            filter_ = decode_pattern(filter_raw)
        else:
            filter_str, buf = String.parse(buf, params)
            filter_ = decode_pattern(filter_str.value)
        returned = None if cls.only_subscribed else cls._return_pattern.match(buf)
        if returned is not None:  # special-use attributes are always returned anyway
            buf = buf[returned.end(0) :]
        _, buf = EndLine.parse(buf, params)
        return cls(params.tag, ref_name.value, filter_, special_use_only=special_use_only), buf


class LSubCommand(ListCommand):
    """The ``LSUB`` command lists subscribed mailboxes."""

    command = b"LSUB"
    delegate = ListCommand

    #: Only subscribed mailboxes may be listed.
    only_subscribed: ClassVar[bool] = True


class RenameCommand(CommandAuth):
    """The ``RENAME`` command renames an existing mailbox.

    Args:
        tag: The command tag.
        from_mailbox: The existing mailbox name.
        to_mailbox: The desired mailbox name.

    """

    command = b"RENAME"

    def __init__(
        self, tag: bytes, from_mailbox: Mailbox, to_mailbox: Mailbox, options: ExtensionOptions
    ) -> None:
        super().__init__(tag)
        self.from_mailbox_obj = from_mailbox
        self.to_mailbox_obj = to_mailbox
        self.options = options

    @property
    def from_mailbox(self) -> str:
        return str(self.from_mailbox_obj)

    @property
    def to_mailbox(self) -> str:
        return str(self.to_mailbox_obj)

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[RenameCommand, memoryview]:
        _, buf = Space.parse(buf, params)
        from_mailbox, buf = Mailbox.parse(buf, params)
        _, buf = Space.parse(buf, params)
        to_mailbox, buf = Mailbox.parse(buf, params)
        options, buf = ExtensionOptions.parse(buf, params)
        _, buf = EndLine.parse(buf, params)
        return cls(params.tag, from_mailbox, to_mailbox, options), buf


class SelectCommand(CommandMailboxArg):
    """The ``SELECT`` command selects a mailbox for querying, updates, and
    state changes.

    """

    command = b"SELECT"

    #: The mailbox will not be opened read-only unless the backend indicates
    #: that it must be.
    readonly: ClassVar[bool] = False

    def __init__(self, tag: bytes, mailbox: Mailbox, options: ExtensionOptions) -> None:
        super().__init__(tag, mailbox)
        self.options = options

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[SelectCommand, memoryview]:
        _, buf = Space.parse(buf, params)
        mailbox, buf = Mailbox.parse(buf, params)
        options, after = ExtensionOptions.parse(buf, params)
        if any(name != b"CONDSTORE" or arg.value for name, arg in options.value.items()):
            raise NotParseable(buf)  # QRESYNC and other parameters are not supported
        _, buf = EndLine.parse(after, params)
        return cls(params.tag, mailbox, options), buf

    @property
    def condstore(self) -> bool:
        """``SELECT name (CONDSTORE)``: the client enables CONDSTORE (RFC 7162 3.1.8)."""
        return self.options.has(b"CONDSTORE")


class ExamineCommand(SelectCommand):
    """The ``EXAMINE`` command selects a mailbox as read-only for querying and
    state changes.

    """

    command = b"EXAMINE"
    delegate = SelectCommand

    #: The mailbox will be opened read-only.
    readonly: ClassVar[bool] = True


class EnableCommand(CommandAuth):
    """The ``ENABLE`` command turns on extensions the client can handle.

    See Also:
        `RFC 5161 <https://tools.ietf.org/html/rfc5161>`_

    Args:
        tag: The command tag.
        capabilities: The capability names given, upper-cased.

    """

    command = b"ENABLE"

    def __init__(self, tag: bytes, capabilities: Sequence[bytes]) -> None:
        super().__init__(tag)
        self.capabilities = capabilities

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[EnableCommand, memoryview]:
        capabilities: list[bytes] = []
        while True:
            try:
                _, after = Space.parse(buf, params)
                atom, after = Atom.parse(after, params)
            except NotParseable:
                break
            capabilities.append(atom.value.upper())
            buf = after
        if not capabilities:
            raise NotParseable(buf)
        _, buf = EndLine.parse(buf, params)
        return cls(params.tag, capabilities), buf


class StatusCommand(CommandMailboxArg):
    """The ``STATUS`` command returns information about a mailbox without
    selecting it.

    Args:
        tag: The command tag.
        mailbox: The mailbox name.
        status_list: The status attributes to return.

    """

    command = b"STATUS"

    def __init__(
        self, tag: bytes, mailbox: Mailbox, status_list: Sequence[StatusAttribute]
    ) -> None:
        super().__init__(tag, mailbox)
        self.status_list = status_list

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[StatusCommand, memoryview]:
        _, buf = Space.parse(buf, params)
        mailbox, buf = Mailbox.parse(buf, params)
        _, buf = Space.parse(buf, params)
        params_copy = params.copy(expected=[StatusAttribute])
        status_list_p, after = List.parse(buf, params_copy)
        if not status_list_p.value:
            raise NotParseable(buf)
        _, buf = EndLine.parse(after, params)
        status_list = status_list_p.get_as(StatusAttribute)
        return cls(params.tag, mailbox, status_list), buf


class SubscribeCommand(CommandMailboxArg):
    """The ``SUBSCRIBE`` command subscribes to an existing mailbox."""

    command = b"SUBSCRIBE"


class UnsubscribeCommand(CommandMailboxArg):
    """The ``UNSUBSCRIBE`` command unsubscribes from a subscribed mailbox."""

    command = b"UNSUBSCRIBE"
