from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Final

from . import Params, Space
from .command import Command
from .command.any import CapabilityCommand, IdCommand, LogoutCommand, NoOpCommand
from .command.auth import (
    AppendCommand,
    CreateCommand,
    DeleteCommand,
    EnableCommand,
    ExamineCommand,
    ListCommand,
    LSubCommand,
    RenameCommand,
    SelectCommand,
    StatusCommand,
    SubscribeCommand,
    UnsubscribeCommand,
)
from .command.nonauth import AuthenticateCommand, LoginCommand, StartTLSCommand
from .command.select import (
    CheckCommand,
    CloseCommand,
    CopyCommand,
    ExpungeCommand,
    FetchCommand,
    IdleCommand,
    MoveCommand,
    SearchCommand,
    StoreCommand,
    UidCommand,
    UidCopyCommand,
    UidExpungeCommand,
    UidFetchCommand,
    UidMoveCommand,
    UidSearchCommand,
    UidStoreCommand,
)
from .exceptions import InvalidMailboxName, NotParseable
from .primitives import Atom
from .specials import Tag

__all__ = ["MAX_NESTING", "Commands", "InvalidCommand", "builtin_commands", "nesting_depth"]

#: Parenthesised lists may nest this deep in a command (SEARCH, FETCH, STORE, APPEND): the
#: parsers recurse per level, and a 64 KiB line of "(" must get BAD, not exhaust the stack.
MAX_NESTING: Final = 64

_LITERAL: Final = re.compile(rb"~?\{(\d+)\+?\}\r?\n")
_NOT_PARENS: Final = bytes(b for b in range(256) if b not in b"()")


def nesting_depth(data: bytes) -> int:
    """The deepest parenthesis nesting of a command, literals' contents skipped."""
    depth = deepest = pos = 0
    while pos < len(data):
        literal = _LITERAL.search(data, pos)
        end = literal.start() if literal else len(data)
        for char in data[pos:end].translate(None, _NOT_PARENS):
            depth = depth + 1 if char == 0x28 else max(depth - 1, 0)
            deepest = max(deepest, depth)
        if literal is None:
            break
        pos = literal.end() + int(literal.group(1))
    return deepest


#: List of built-in commands. These commands are automatically registered by a
#: new :class:`Commands` object.
builtin_commands: Collection[type[Command]] = [
    CapabilityCommand,
    LogoutCommand,
    NoOpCommand,
    IdCommand,
    AppendCommand,
    CreateCommand,
    DeleteCommand,
    EnableCommand,
    ExamineCommand,
    ListCommand,
    LSubCommand,
    RenameCommand,
    SelectCommand,
    StatusCommand,
    SubscribeCommand,
    UnsubscribeCommand,
    AuthenticateCommand,
    LoginCommand,
    StartTLSCommand,
    CheckCommand,
    CloseCommand,
    ExpungeCommand,
    CopyCommand,
    MoveCommand,
    FetchCommand,
    StoreCommand,
    SearchCommand,
    UidCommand,
    UidCopyCommand,
    UidMoveCommand,
    UidExpungeCommand,
    UidFetchCommand,
    UidSearchCommand,
    UidStoreCommand,
    IdleCommand,
]


def _too_deep(buf: memoryview) -> bool:
    if buf.nbytes <= MAX_NESTING:
        return False
    data = bytes(buf)
    return data.count(b"(") > MAX_NESTING and nesting_depth(data) > MAX_NESTING


class InvalidCommand(Command):
    """An invalid command, either because the tag or command name could not be
    parsed, the command name was not recognized, or a known command was given
    invalid arguments.

    Args:
        params: The parsing parameters
        parse_exc: The exception that caused the failure, if any.
        command: The command name, if available.
        command_type: The command type, if available.

    """

    command = b"[INVALID]"

    def __init__(
        self,
        params: Params,
        parse_exc: NotParseable | None,
        command: bytes | None = None,
        command_type: type[Command] | None = None,
        *,
        refusal: bytes | None = None,
    ) -> None:
        super().__init__(params.tag)
        self._parse_exc = parse_exc
        self._command = command
        self._command_type = command_type
        self._refusal = refusal

    @property
    def refusal(self) -> bytes | None:
        """Why a well-formed command is refused (a tagged NO rather than BAD), if it is."""
        if isinstance(self._parse_exc, InvalidMailboxName):
            return b"Mailbox name is not valid mUTF-7."
        return None

    @property
    def state_refusal(self) -> bytes | None:
        """Why the command is not allowed in this state (checked before its arguments)."""
        return self._refusal

    @property
    def value(self) -> bytes:
        return self._command or b""

    @property
    def message(self) -> bytes:
        """The message to include in a BAD response."""
        if self._refusal is not None:
            return self._refusal
        if not self.command_name:
            return b"Command not given."
        if not self.command_type:
            return b"%b: Unknown command." % (self.command_name,)
        return b"%b: Invalid arguments." % (self.command_name,)

    @property
    def command_name(self) -> bytes | None:
        """The command name, if the name could be parsed."""
        return self._command

    @property
    def command_type(self) -> type[Command] | None:
        """The command type, if parsing failed due to invalid arguments."""
        return self._command_type

    @property
    def parse_exc(self) -> NotParseable | None:
        """The parsing exception, if any."""
        return self._parse_exc

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[InvalidCommand, memoryview]:
        raise NotImplementedError()


class Commands:
    """Manages the set of all known IMAP commands and the ability to parse."""

    __slots__ = ["commands"]

    def __init__(self) -> None:
        super().__init__()
        self.commands: dict[bytes, type[Command]] = {}
        self._load_commands()

    def _load_commands(self) -> None:
        for cmd in builtin_commands:
            self.register(cmd)

    def register(self, cmd: type[Command]) -> None:
        """Register a new IMAP command.

        Args:
            cmd: The new command type.

        """
        self.commands[cmd.command] = cmd

    def deregister(self, name: bytes) -> None:
        """Deregister an IMAP command by name. Does nothing if the command is
        not registered.

        Args:
            name: The IMAP command name.

        """
        self.commands.pop(name.upper(), None)

    def parse(
        self,
        buf: memoryview,
        params: Params,
        *,
        refuse: Callable[[type[Command]], bytes | None] | None = None,
    ) -> tuple[Command, memoryview]:
        """Parse the given bytes into a command. The basic syntax is a tag
        string, a command name, possibly some arguments, and then an endline.
        If the command has a complete structure but cannot be parsed, an
        :class:`InvalidCommand` is returned.

        Args:
            buf: The bytes to parse.
            params: The parsing parameters.
            refuse: Given the command's type, why it may not run now (or None).

        """
        try:
            tag, buf = Tag.parse(buf, params)
        except NotParseable as exc:
            return InvalidCommand(params, exc), buf[0:0]
        else:
            params = params.copy(tag=tag.value)
        cmd_parts: list[bytes] = []
        while True:
            try:
                _, buf = Space.parse(buf, params)
                atom, buf = Atom.parse(buf, params)
                cmd_parts.append(atom.value.upper())
            except NotParseable as exc:
                return InvalidCommand(params, exc), buf[0:0]
            command = b" ".join(cmd_parts)
            cmd_type = self.commands.get(command)
            if not cmd_type:
                return InvalidCommand(params, None, command), buf[0:0]
            if not cmd_type.compound:
                break
        params = params.copy(command_name=command)
        # The connection's state decides first: a command not allowed now is refused before
        # its arguments are parsed (no work for a client that has not logged in).
        reason = refuse(cmd_type) if refuse is not None else None
        if reason is None and _too_deep(buf):
            reason = b"%b: Lists nested too deeply." % (command,)
        if reason is not None:
            return InvalidCommand(params, None, command, cmd_type, refusal=reason), buf[0:0]
        try:
            return cmd_type.parse(buf, params)
        except NotParseable as exc:
            return InvalidCommand(params, exc, command, cmd_type), buf[0:0]
        except (RecursionError, ValueError, IndexError) as exc:  # parsers' own faults: BAD
            cause = NotParseable(buf[0:0])
            cause.__cause__ = exc
            return InvalidCommand(params, cause, command, cmd_type), buf[0:0]
