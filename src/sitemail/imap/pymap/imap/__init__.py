from __future__ import annotations

import asyncio
import binascii
import builtins
import logging
import re
import sys
from asyncio import CancelledError, StreamReader, StreamWriter, shield
from base64 import b64decode, b64encode
from collections.abc import Awaitable, Iterable
from contextlib import suppress
from ssl import SSLError
from typing import TypeVar

from proxyprotocol.sock import SocketInfo
from pysasl.creds.server import ServerCredentials
from pysasl.exception import AuthenticationError
from pysasl.mechanism import ChallengeResponse, ServerChallenge

from sitemail.imap.pymap.concurrent import Event
from sitemail.imap.pymap.config import IMAPConfig
from sitemail.imap.pymap.context import current_command, socket_info, subsystem
from sitemail.imap.pymap.exceptions import ResponseError
from sitemail.imap.pymap.parsing.command import Command
from sitemail.imap.pymap.parsing.command.nonauth import AuthenticateCommand, StartTLSCommand
from sitemail.imap.pymap.parsing.command.select import IdleCommand
from sitemail.imap.pymap.parsing.commands import Commands
from sitemail.imap.pymap.parsing.response import (
    CommandResponse,
    Response,
    ResponseBad,
    ResponseBye,
    ResponseCode,
    ResponseContinuation,
    ResponseNo,
    ResponseOk,
)
from sitemail.imap.pymap.parsing.state import ExpectContinuation, ParsingInterrupt, ParsingState

from .state import ConnectionState

__all__ = ["IMAPConnection"]

_Ret = TypeVar("_Ret")
_log = logging.getLogger(__name__)


class IMAPConnection:
    """Runs a single IMAP connection from start to finish.

    Args:
        commands: Defines the IMAP commands available to the connection.
        config: Settings to use for the IMAP connection.
        reader: The input stream for the socket.
        writer: The output stream for the socket.

    """

    _lines = re.compile(r"\r?\n")
    _literal_plus = re.compile(rb"{(\d+)\+}\r?\n$")

    __slots__ = [
        "bad_command_limit",
        "commands",
        "config",
        "params",
        "pp_reader",
        "pp_result",
        "reader",
        "writer",
    ]

    def __init__(
        self,
        commands: Commands,
        config: IMAPConfig,
        reader: StreamReader,
        writer: StreamWriter,
        sock_info: SocketInfo,
    ) -> None:
        super().__init__()
        self.commands = commands
        self.config = config
        self.params = config.parsing_params
        self.bad_command_limit = config.bad_command_limit
        self.reader = reader
        self.writer = writer
        socket_info.set(sock_info)

    def close(self) -> None:
        self.writer.close()

    @classmethod
    def _print(cls, log_format: str, output: str | bytes) -> None:
        if _log.isEnabledFor(logging.DEBUG):
            uid = socket_info.get().unique_id.hex()
            if not isinstance(output, str):
                output = str(output, "utf-8", "replace")
            lines = cls._lines.split(output)
            if not lines[-1]:
                lines = lines[:-1]
            for line in lines:
                _log.debug(log_format, uid, line)

    def _exec(self, future: Awaitable[_Ret]) -> Awaitable[_Ret]:
        return subsystem.get().execute(future)

    async def readline(self) -> memoryview:
        buf = bytearray(await self.reader.readline())
        while True:
            if not buf.endswith(b"\n"):
                raise EOFError()
            if buf.endswith((b"+}\n", b"+}\r\n")):
                lit_plus = self._literal_plus.search(buf)
            else:
                lit_plus = None
            if lit_plus:
                literal_length = int(lit_plus.group(1))
                buf += await self.reader.readexactly(literal_length)
                buf += await self.reader.readline()
            else:
                self._print("%s -->| %s", bytes(buf))
                return memoryview(buf)

    async def read_continuation(self, literal_length: int) -> memoryview:
        extra_literal = await self.reader.readexactly(literal_length)
        self._print("%s -->| %s", extra_literal)
        extra_line = await self.readline()
        extra = extra_literal + bytes(extra_line)
        return memoryview(extra)

    async def authenticate(
        self, state: ConnectionState, mech_name: bytes
    ) -> ServerCredentials | None:
        mech = state.auth.get_server(mech_name)
        if not mech:
            return None
        responses: list[ChallengeResponse] = []
        while True:
            try:
                creds, final = mech.server_attempt(responses)
            except ServerChallenge as chal:
                chal_bytes = b64encode(chal.data)
                cont = ResponseContinuation(chal_bytes)
                await self.write_response(cont)
                resp_bytes = bytes(await self.read_continuation(0))
                if resp_bytes.rstrip(b"\r\n") == b"*":
                    raise AuthenticationError("Authentication canceled.") from None
                try:
                    resp_dec = b64decode(resp_bytes)
                except binascii.Error as exc:
                    raise AuthenticationError() from exc
                else:
                    responses.append(ChallengeResponse(chal.data, resp_dec))
            else:
                if final is not None:
                    cont = ResponseContinuation(b64encode(final))
                    await self.write_response(cont)
                    await self.read_continuation(0)
                return creds

    async def _interrupt(
        self, state: ConnectionState, interrupt: ParsingInterrupt, continuations: list[memoryview]
    ) -> None:
        expected = interrupt.expected
        if isinstance(expected, ExpectContinuation):
            cont = ResponseContinuation(expected.message)
            await self.write_response(cont)
            ret = await self.read_continuation(expected.literal_length)
            continuations.append(ret)
        else:
            raise TypeError(expected) from interrupt

    async def read_command(self, state: ConnectionState) -> Command:
        line = await self.readline()
        conts: list[memoryview] = []
        while True:
            parsing_state = ParsingState(continuations=conts)
            params = self.params.copy(parsing_state)
            try:
                cmd, _ = self.commands.parse(line, params, refuse=state.refusal)
            except ParsingInterrupt as interrupt:
                await self._interrupt(state, interrupt, conts)
            else:
                return cmd

    async def read_idle_done(self, cmd: IdleCommand) -> bool:
        buf = await self.read_continuation(0)
        ok, _ = cmd.parse_done(buf)
        return ok

    async def write_response(self, resp: Response) -> None:
        try:
            await resp.async_write(self.writer)
            await self.writer.drain()
        except ConnectionError:
            pass
        else:
            self._print("%s <--| %s", bytes(resp))

    async def start_tls(self) -> None:
        ssl_context = self.config.ssl_context
        await self.writer.start_tls(ssl_context)
        self._print("%s <->| %s", "<TLS handshake>")

    async def send_error_disconnect(self) -> None:
        _, exc, _ = sys.exc_info()
        if isinstance(exc, CancelledError):
            resp = ResponseBye(
                b"Server has closed the connection.", ResponseCode.of(b"UNAVAILABLE")
            )
        else:
            resp = ResponseBye(b"Unhandled server error.", ResponseCode.of(b"SERVERBUG"))
        with suppress(OSError):
            await self.write_response(resp)

    async def write_updates(self, untagged: Iterable[Response]) -> None:
        for resp in untagged:
            await self.write_response(resp)

    async def handle_updates(self, state: ConnectionState, done: Event, cmd: IdleCommand) -> None:
        while not done.is_set():
            untagged = await self._exec(state.receive_updates(cmd, done))
            await shield(self.write_updates(untagged))

    async def idle(self, state: ConnectionState, cmd: IdleCommand) -> CommandResponse:
        response = await self._exec(state.do_command(cmd))
        if not isinstance(response, ResponseOk):
            return response
        await self.write_response(ResponseContinuation(b"Idling."))
        done = subsystem.get().new_event()
        updates_task = asyncio.create_task(self.handle_updates(state, done, cmd))
        done_task = asyncio.create_task(self.read_idle_done(cmd))
        updates_exc: Exception | None = None
        done_exc: Exception | None = None
        try:
            ok = await done_task
        except Exception as exc:
            done_exc = exc
        finally:
            done.set()
        try:
            await updates_task
        except Exception as exc:
            updates_exc = exc
        if updates_exc:
            raise updates_exc
        if done_exc:
            raise done_exc
        if not ok:
            return ResponseBad(cmd.tag, b'Expected "DONE".')
        return response

    async def run(self, state: ConnectionState) -> None:
        """Start the socket communication with the IMAP greeting, and then
        enter the command/response cycle.

        Args:
            state: Defines the interaction with the backend plugin.

        """
        self._print("%s +++| %s", str(socket_info.get()))
        try:
            await self._run_state(state)
        finally:
            self._print("%s ---| %s", b"<disconnected>")

    async def _run_state(self, state: ConnectionState) -> None:
        bad_commands = 0
        try:
            greeting = await self._exec(state.do_greeting())
        except ResponseError as exc:
            resp = exc.get_response(b"*")
            resp.condition = ResponseBye.condition
            await self.write_response(resp)
            return
        else:
            await self.write_response(greeting)
        while True:
            try:
                cmd = await self.read_command(state)
            except (ConnectionError, EOFError):
                break
            except CancelledError:
                await self.send_error_disconnect()
                break
            except Exception:
                await self.send_error_disconnect()
                raise
            else:
                prev_cmd = current_command.set(cmd)
                try:
                    if isinstance(cmd, AuthenticateCommand):
                        creds = await self.authenticate(state, cmd.mech_name)
                        response = await self._exec(state.do_authenticate(cmd, creds))
                    elif isinstance(cmd, IdleCommand):
                        response = await self.idle(state, cmd)
                    else:
                        response = await self._exec(state.do_command(cmd))
                except ResponseError as exc:
                    resp = exc.get_response(cmd.tag)
                    await self.write_response(resp)
                    if resp.is_terminal:
                        break
                except AuthenticationError as exc:
                    msg = bytes(str(exc), "utf-8", "surrogateescape")
                    resp = ResponseBad(cmd.tag, msg)
                    await self.write_response(resp)
                except builtins.TimeoutError:
                    resp = ResponseNo(cmd.tag, b"Operation timed out.", ResponseCode.of(b"TIMEOUT"))
                    await self.write_response(resp)
                except (CancelledError, ConnectionError, EOFError):
                    await self.send_error_disconnect()
                    break
                except Exception:
                    await self.send_error_disconnect()
                    raise
                else:
                    await self.write_response(response)
                    if response.is_bad:
                        bad_commands += 1
                        if self.bad_command_limit and bad_commands >= self.bad_command_limit:
                            # said after the tagged BAD (upstream queued it too late to send)
                            await self.write_response(
                                ResponseBye(b"Too many errors, disconnecting.")
                            )
                            break
                    else:
                        bad_commands = 0
                    if response.is_terminal:
                        break
                    if isinstance(cmd, StartTLSCommand) and isinstance(response, ResponseOk):
                        try:
                            await self.start_tls()
                        except ConnectionError:
                            break
                        except SSLError as exc:
                            self._print("%s <->| <TLS failure: %s>", exc.reason)
                            return
                finally:
                    await state.do_cleanup()
                    current_command.reset(prev_cmd)
