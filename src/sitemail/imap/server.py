"""IMAP4rev1 listeners: our fork of pymap's protocol engine, hardened at the edges.

One job: accept IMAP connections (143 with STARTTLS, 993 with implicit TLS) and run pymap's
command loop for each, with our backend (imap/backend.py). Collaborators: the `Store`, the
`Authenticator`, `ImapConfig`, `LimitsConfig` (timeouts), an `ssl.SSLContext`.

What this layer changes in the engine's connection loop (the engine is our fork of pymap
0.36.7 in imap/pymap/; see docs/client-access.md):
- Authentication only over TLS, whoever connects: pymap lets clients on the loopback
  interface log in in clear; we never do. Before STARTTLS the capability says LOGINDISABLED
  and offers no AUTH= mechanism; only PLAIN and LOGIN are offered afterwards.
- STARTTLS command injection: anything the client pipelined after STARTTLS in clear is
  discarded before the TLS handshake starts (pymap kept it and ran it as if it came over TLS).
- Size limits before allocation: a command line longer than `max_line` (the reader's limit,
  so never buffered beyond it) and a LITERAL+ literal larger than `max_literal` are refused
  with a BYE and the connection is closed, before the literal is read. Synchronising literals
  are refused by pymap's parser before the continuation is sent (APPEND: `max_literal`, others
  4096 octets).
- Inactivity: `limits.timeout` before login, 30 minutes after (RFC 3501 5.4), IDLE included.
- Faults: a client never sees a traceback; unexpected errors end the session with
  `BYE [SERVERBUG]` and are logged here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import sys
import uuid
from argparse import Namespace
from collections.abc import Sequence
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass
from typing import Final, NoReturn

from proxyprotocol.sock import SocketInfo
from pysasl import SASLAuth

from sitemail.config.model import ImapConfig, LimitsConfig
from sitemail.core.clock import Clock
from sitemail.core.connections import ConnectionCounter
from sitemail.directory.auth import Authenticates
from sitemail.imap import speedups
from sitemail.imap.backend import BackendConfig, FolderRegistry, Login, peer_ip
from sitemail.imap.pymap.bytes import WriteStream
from sitemail.imap.pymap.context import connection_exit
from sitemail.imap.pymap.fetch import DynamicLoadedFetchValue, MessageAttributes
from sitemail.imap.pymap.imap import IMAPConnection
from sitemail.imap.pymap.imap.state import ConnectionState
from sitemail.imap.pymap.interfaces.message import LoadedMessageInterface, MessageInterface
from sitemail.imap.pymap.parsing.command.select import FetchCommand
from sitemail.imap.pymap.parsing.commands import Commands
from sitemail.imap.pymap.parsing.primitives import List
from sitemail.imap.pymap.parsing.response import (
    CommandResponse,
    Response,
    ResponseBye,
    ResponseCode,
    ResponseOk,
    UntaggedResponse,
)
from sitemail.imap.pymap.parsing.specials import DateTime, FetchAttribute, FetchRequirement
from sitemail.imap.pymap.selected import SelectedMailbox
from sitemail.store import Store

__all__ = ["ImapListener", "ImapService"]

log = logging.getLogger("sitemail.imap")

_AUTHENTICATED_TIMEOUT: Final = 30 * 60.0  # RFC 3501 section 5.4: at least 30 minutes
_WRITE_CHUNK: Final = 256 * 1024
_LITERAL_PLUS: Final = re.compile(rb"~?\{(\d{1,20})\+\}\r?\n$")


class _RefusedError(Exception):
    """The client sent something we will not read: answered with BYE, then closed."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _Gather:
    """A write stream that keeps what is written (see `_Connection.write_response`)."""

    __slots__ = ["data"]

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data


class _Config(BackendConfig):
    @property
    def tls_auth(self) -> SASLAuth:
        return SASLAuth.named([b"PLAIN", b"LOGIN"])


_FAST_SIMPLE: Final = frozenset({b"UID", b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"MODSEQ"})
_FAST_SECTIONED: Final = frozenset(
    {b"BODY", b"BODY.PEEK", b"RFC822", b"RFC822.HEADER", b"RFC822.TEXT"}
)


def fast_fetchable(attributes: Sequence[FetchAttribute]) -> bool:
    """Whether `_FastFetch` renders all of these (what clients fetch for whole folders)."""
    return all(
        attr.value in _FAST_SIMPLE or (attr.value in _FAST_SECTIONED and attr.section is not None)
        for attr in attributes
    )


class _FastFetch(UntaggedResponse):
    """One FETCH response, rendered directly instead of through pymap's per-value objects.

    Same octets as pymap's FetchResponse for the attributes `fast_fetchable` accepts (UID,
    FLAGS, INTERNALDATE, RFC822.SIZE, BODY[...]/BODY.PEEK[...]/RFC822* with sections and
    partials; tests/unit/imap/test_fast_fetch.py compares them), for a quarter of the time.
    Content is loaded only when an attribute needs it. Not merged with later FETCH updates
    for the same message: those follow as their own FETCH line, which RFC 3501 allows.
    """

    def __init__(
        self,
        seq: int,
        message: MessageInterface,
        attributes: Sequence[FetchAttribute],
        selected: SelectedMailbox,
        requirement: FetchRequirement,
    ) -> None:
        super().__init__()
        self.seq = seq
        self._message = message
        self._attributes = attributes
        self._selected = selected
        self._requirement = requirement  # of all the attributes: the same for every message

    @property
    def text(self) -> bytes:
        return b"%i FETCH" % (self.seq,)

    async def async_write(self, writer: WriteStream) -> None:
        loaded = None
        if not self._requirement.has_none(FetchRequirement.CONTENT):
            loaded = await self._message.load_content(self._requirement)
        writer.write(self._render(loaded))

    def write(self, writer: WriteStream) -> None:  # only for logs: no content loaded
        writer.write(self._render(None))

    def _render(self, loaded: LoadedMessageInterface | None) -> bytes:
        message = self._message
        items: list[bytes] = []
        for attr in self._attributes:
            name = attr.value
            if name == b"UID":
                items.append(b"UID %d" % message.uid)
            elif name == b"FLAGS":
                flags = message.get_flags(self._selected.session_flags)
                items.append(b"FLAGS " + bytes(List(flags, sort=True)))
            elif name == b"INTERNALDATE":
                items.append(b"INTERNALDATE " + bytes(DateTime(message.internal_date)))
            elif name == b"MODSEQ":
                items.append(b"MODSEQ (%d)" % message.modseq)
            elif loaded is None:
                items.append(bytes(attr.for_response) + b" " + MessageAttributes.placeholder)
            elif name == b"RFC822.SIZE":
                items.append(b"RFC822.SIZE %d" % loaded.get_size())
            else:
                data = bytes(DynamicLoadedFetchValue._get_data(attr.section, attr.partial, loaded))
                items.append(b"%b {%d}\r\n%b" % (bytes(attr.for_response), len(data), data))
        return b"* %d FETCH (%b)\r\n" % (self.seq, b" ".join(items))


class _State(ConnectionState):
    """pymap's connection state, except that only TLS unlocks authentication and FETCH of
    the usual attributes takes a faster path."""

    def __init__(self, login: Login, config: _Config, *, implicit_tls: bool) -> None:
        super().__init__(login, config)
        if implicit_tls:
            self.auth = config.tls_auth
            with contextlib.suppress(ValueError):
                self._capability.remove(b"STARTTLS")

    async def do_greeting(self) -> CommandResponse:
        # pymap's greeting unlocks AUTH in clear for loopback clients: not here.
        return ResponseOk(b"*", self.config.greeting, self.capability)

    async def do_fetch(self, cmd: FetchCommand) -> tuple[CommandResponse, SelectedMailbox | None]:
        # pymap answers a duplicate once; CONDSTORE may add MODSEQ
        attributes = list(dict.fromkeys(self._fetch_attributes(cmd)))
        if not fast_fetchable(attributes):
            return await super().do_fetch(cmd)
        if not cmd.uid:
            self.selected.hide_expunged = True
        set_seen = not self.selected.readonly and any(a.set_seen for a in attributes)
        messages, updates = await self.session.fetch_messages(
            self.selected, cmd.sequence_set, set_seen
        )
        response = ResponseOk(cmd.tag, cmd.command + b" completed.")
        changedsince = cmd.changedsince
        requirement = FetchRequirement.reduce(a.requirement for a in attributes)
        for seq, message in messages:
            if changedsince is not None and message.modseq <= changedsince:
                continue
            if message.expunged:
                response.code = ResponseCode.of(b"EXPUNGEISSUED")
            response.add_untagged(_FastFetch(seq, message, attributes, self.selected, requirement))
        return response, updates


class _Connection(IMAPConnection):
    """pymap's connection loop with bounded reads, timeouts and a clean STARTTLS switch."""

    __slots__ = ["_authenticated", "_limits", "_settings"]

    def __init__(
        self,
        commands: Commands,
        config: _Config,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sock_info: SocketInfo,
        *,
        settings: ImapConfig,
        limits: LimitsConfig,
    ) -> None:
        super().__init__(commands, config, reader, writer, sock_info)
        self._settings = settings
        self._limits = limits
        self._authenticated = False

    async def _refuse(self, text: str) -> NoReturn:
        """Say BYE with the reason, then end the session (the listener logs it)."""
        await self.write_response(ResponseBye(text.encode("ascii", "replace")))
        raise _RefusedError(text)

    async def _line(self) -> bytes:
        timeout = _AUTHENTICATED_TIMEOUT if self._authenticated else self._limits.timeout
        try:
            return await asyncio.wait_for(self.reader.readline(), timeout)
        except TimeoutError:
            await self._refuse("autologout: idle for too long")
        except ValueError:  # the reader's limit: the line is longer than max_line
            await self._refuse(f"line too long (at most {self._settings.max_line} octets)")

    async def readline(self) -> memoryview:
        buf = bytearray(await self._line())
        literals = 0
        while True:
            if not buf.endswith(b"\n"):
                raise EOFError()
            match = _LITERAL_PLUS.search(buf[-32:])
            if match is None:
                return memoryview(buf)
            length = int(match.group(1))
            literals += length
            if literals > self._settings.max_literal:
                await self._refuse(
                    f"literal too large (at most {self._settings.max_literal} octets)"
                )
            buf += await asyncio.wait_for(self.reader.readexactly(length), self._limits.timeout)
            buf += await self._line()
            if len(buf) - literals > self._settings.max_line:
                await self._refuse(f"line too long (at most {self._settings.max_line} octets)")

    async def read_continuation(self, literal_length: int) -> memoryview:
        if literal_length > self._settings.max_literal:
            await self._refuse(f"literal too large (at most {self._settings.max_literal} octets)")
        literal = b""
        if literal_length:
            literal = await asyncio.wait_for(
                self.reader.readexactly(literal_length), self._limits.timeout
            )
        return memoryview(literal + bytes(await self.readline()))

    async def write_response(self, resp: Response) -> None:
        """pymap writes every piece of every untagged response with its own write (a TLS
        record each); we gather them and write about `_WRITE_CHUNK` octets at a time, waiting
        for the client to take each chunk, so a big FETCH neither costs thousands of records
        nor piles up in memory."""
        out = _Gather()
        try:
            if isinstance(resp, CommandResponse):
                for untagged in resp._untagged:
                    await untagged.async_write(out)
                    if len(out.data) >= _WRITE_CHUNK:
                        self.writer.write(bytes(out.data))
                        out.data.clear()
                        await self.writer.drain()
                Response.write(resp, out)  # the tagged line alone
            else:
                await resp.async_write(out)
            self.writer.write(bytes(out.data))
            await self.writer.drain()
        except ConnectionError:
            return
        if isinstance(resp, ResponseOk) and resp.text.startswith(b"Authentication successful"):
            self._authenticated = True

    async def send_error_disconnect(self) -> None:
        if isinstance(sys.exc_info()[1], _RefusedError):
            return  # the listener answers with the reason
        await super().send_error_disconnect()

    async def start_tls(self) -> None:
        await self.writer.drain()
        # Whatever the client sent after STARTTLS in clear is an injection attempt: drop it
        # before the handshake (StreamReader._buffer is private; aiosmtpd clears it the same
        # way). No await runs between this and the transport switch.
        self.reader._buffer.clear()  # type: ignore[attr-defined]
        await self.writer.start_tls(self.config.ssl_context)


@dataclass(slots=True)
class ImapListener:
    server: asyncio.Server
    address: str
    port: int
    implicit_tls: bool


class ImapService:
    """Every IMAP listener of one server, sharing one folder registry."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        authenticator: Authenticates,
        settings: ImapConfig,
        limits: LimitsConfig,
        tls_context: ssl.SSLContext,
        server_name: str,
    ) -> None:
        self.settings = settings
        self.limits = limits
        self.tls_context = tls_context
        self.listeners: list[ImapListener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._counter = ConnectionCounter(limits.connections_per_client, limits.connections_total)
        speedups.apply()
        args = Namespace(debug=False, passlib_cfg=None, proxy_protocol=None)
        self._config = _Config(
            args,
            host=None,
            port=0,
            ssl_context=tls_context,
            tls_enabled=True,
            invalid_user_sleep=0.0,  # our Authenticator delays every failure itself
            reject_dnsbl=False,
            max_append_len=settings.max_literal,
            bad_command_limit=10,
            greeting_host=server_name,
        )
        self.registry = FolderRegistry(store, clock, settings)
        self._login = Login(self._config, self.registry, authenticator)

    async def start(
        self, address: str, port: int, *, implicit_tls: bool, sock: socket.socket | None = None
    ) -> ImapListener:
        """Listen on address:port (0: any free port); implicit TLS or STARTTLS."""

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await self._serve(reader, writer, implicit_tls=implicit_tls)

        tls = self.tls_context if implicit_tls else None
        if sock is not None:  # a socket bound by the supervisor (sitemail.frontends)
            server = await asyncio.start_server(
                accept,
                sock=sock,
                ssl=tls,
                limit=self.settings.max_line,
            )
        else:
            server = await asyncio.start_server(
                accept,
                address,
                port,
                ssl=tls,
                limit=self.settings.max_line,
            )
        bound = int(server.sockets[0].getsockname()[1])
        listener = ImapListener(server, address, bound, implicit_tls)
        self.listeners.append(listener)
        return listener

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, implicit_tls: bool
    ) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        peer_ip.set(address)
        refusal = self._counter.acquire(address)
        if refusal is not None:
            log.warning("imap connection refused peer=%s reason=%s", address, refusal)
            with contextlib.suppress(Exception):
                writer.write(b"* BYE [UNAVAILABLE] " + refusal.encode("ascii") + b"\r\n")
                await writer.drain()
                writer.close()
            return
        try:
            await self._converse(reader, writer, implicit_tls=implicit_tls)
        finally:
            self._counter.release(address)

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, implicit_tls: bool
    ) -> None:
        sock_info = SocketInfo.get(writer, None, unique_id=uuid.uuid4().bytes)
        conn = _Connection(
            self._config.commands,
            self._config,
            reader,
            writer,
            sock_info,
            settings=self.settings,
            limits=self.limits,
        )
        state = _State(self._login, self._config, implicit_tls=implicit_tls)
        try:
            async with AsyncExitStack() as stack:
                connection_exit.set(stack)
                stack.enter_context(closing(conn))
                await conn.run(state)
        except _RefusedError as refused:
            log.info("imap session refused peer=%s reason=%s", peer_ip.get(), refused.text)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, EOFError):
            with contextlib.suppress(Exception):
                writer.close()
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                writer.close()
            raise
        except Exception:
            log.exception("imap session failed peer=%s", peer_ip.get())
            with contextlib.suppress(Exception):
                await conn.write_response(
                    ResponseBye(b"Server error.", ResponseCode.of(b"SERVERBUG"))
                )
                writer.close()

    async def stop(self) -> None:
        """Stop accepting and end every open session."""
        for listener in self.listeners:
            listener.server.close()
        tasks: Sequence[asyncio.Task[None]] = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.registry.stop()
        self.listeners.clear()
