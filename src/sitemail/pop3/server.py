"""POP3 (RFC 1939) with CAPA, RESP-CODES and AUTH-RESP-CODE (RFC 2449, 3206), UIDL, TOP,
STLS (RFC 2595) and SASL PLAIN (RFC 5034), on 110 (STLS) and 995 (implicit TLS).

One job: let a client download and delete the messages of its INBOX. Collaborators: the
`Store` (through `sitemail.mailbox`, in worker threads), the `Authenticator`, `LimitsConfig`,
an `ssl.SSLContext`.

Rules:
- USER/PASS and AUTH only over TLS; before it CAPA offers neither and they answer
  `-ERR [AUTH] ...` asking for STLS. Whatever a client pipelined after STLS in clear is
  discarded before the handshake (command injection).
- The maildrop is the INBOX as it was at login: message numbers and sizes stay fixed for the
  session. DELE only marks; the messages go at QUIT (the UPDATE state), in one transaction,
  and a session that ends any other way deletes nothing. One POP3 session per mailbox at a
  time on this server (`-ERR [IN-USE]`).
- UIDL is "<uidvalidity>.<uid>": unique in the mailbox and stable across sessions and restarts
  (the same numbers IMAP shows).
- Lines: commands are at most 255 octets (RFC 2449 section 4; AUTH responses may be longer,
  up to 12288, as for SMTP); a longer line is answered and the connection closed before more
  of it is read. Messages are sent with CRLF line ends and dot-stuffed.
- Inactivity: `max(600, limits.timeout)` seconds (RFC 1939 section 3: at least 10 minutes).
- Faults: a client never sees a traceback; an unexpected error answers `-ERR [SYS/TEMP]` and
  closes the connection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Final

from sitemail.config.model import LimitsConfig
from sitemail.core.clock import Clock
from sitemail.core.connections import ConnectionCounter
from sitemail.directory.auth import Authenticates, AuthOutcome, AuthResult
from sitemail.mailbox import (
    MessageMeta,
    delete_messages,
    ensure_folders,
    folder_state,
    load_contents,
)
from sitemail.store import Store

__all__ = ["Pop3Listener", "Pop3Service"]

log = logging.getLogger("sitemail.pop3")

_COMMAND_LINE: Final = 255 + 2  # RFC 2449 section 4, with CRLF
_AUTH_LINE: Final = 12288
_ERROR_LIMIT: Final = 10
_LINE_END: Final = re.compile(rb"\r?\n")


class _CloseError(Exception):
    """End the session after sending `text`."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass(frozen=True, slots=True)
class Pop3Listener:
    server: asyncio.Server
    address: str
    port: int
    implicit_tls: bool


@dataclass(slots=True)
class _Maildrop:
    folder_id: int
    uidvalidity: int
    messages: list[MessageMeta]
    deleted: set[int]  # message numbers (1-based) marked with DELE


class Pop3Service:
    """Every POP3 listener of one server (one maildrop lock table)."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        authenticator: Authenticates,
        limits: LimitsConfig,
        tls_context: ssl.SSLContext,
        server_name: str,
    ) -> None:
        self.store = store
        self.clock = clock
        self.authenticator = authenticator
        self.limits = limits
        self.tls_context = tls_context
        self.server_name = server_name
        self.listeners: list[Pop3Listener] = []
        self.locked: set[str] = set()  # mailbox guids with an open session
        self.counter = ConnectionCounter(limits.connections_per_client, limits.connections_total)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(
        self, address: str, port: int, *, implicit_tls: bool, sock: socket.socket | None = None
    ) -> Pop3Listener:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await _Session(self, reader, writer, tls=implicit_tls).run()

        tls = self.tls_context if implicit_tls else None
        if sock is not None:  # a socket bound by the supervisor (sitemail.frontends)
            server = await asyncio.start_server(
                accept,
                sock=sock,
                ssl=tls,
                limit=_AUTH_LINE + 2,
            )
        else:
            server = await asyncio.start_server(
                accept,
                address,
                port,
                ssl=tls,
                limit=_AUTH_LINE + 2,
            )
        bound = int(server.sockets[0].getsockname()[1])
        listener = Pop3Listener(server, address, bound, implicit_tls)
        self.listeners.append(listener)
        return listener

    async def stop(self) -> None:
        for listener in self.listeners:
            listener.server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.listeners.clear()


class _Session:
    """One POP3 connection, from greeting to QUIT."""

    def __init__(
        self,
        service: Pop3Service,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        tls: bool,
    ) -> None:
        self._service = service
        self._reader = reader
        self._writer = writer
        self._tls = tls
        peer = writer.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else ""
        self._user = ""  # USER's argument, waiting for PASS
        self._auth: AuthResult | None = None
        self._drop: _Maildrop | None = None
        self._errors = 0
        self._timeout = max(600.0, service.limits.timeout)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        refusal = self._service.counter.acquire(self._peer)
        if refusal is not None:
            log.warning("pop3 connection refused peer=%s reason=%s", self._peer, refusal)
            with contextlib.suppress(Exception):
                await self._send(f"-ERR [SYS/TEMP] {refusal}")
                self._writer.close()
            return
        try:
            await self._session()
        finally:
            self._service.counter.release(self._peer)

    async def _session(self) -> None:
        try:
            await self._send(f"+OK {self._service.server_name} POP3 sitemail ready")
            while True:
                line = await self._line(_COMMAND_LINE)
                verb, _, arg = line.partition(" ")
                if not await self._dispatch(verb.upper(), arg):
                    break
        except _CloseError as close:
            with contextlib.suppress(Exception):
                await self._send(close.text)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, EOFError):
            pass
        except asyncio.CancelledError:
            self._release()
            self._writer.close()
            raise
        except Exception:
            log.exception("pop3 session failed peer=%s", self._peer)
            with contextlib.suppress(Exception):
                await self._send("-ERR [SYS/TEMP] server error; try again later")
        self._release()
        with contextlib.suppress(Exception):
            self._writer.close()

    def _release(self) -> None:
        if self._auth is not None:
            self._service.locked.discard(self._auth.mailbox)

    async def _line(self, limit: int) -> str:
        try:
            raw = await asyncio.wait_for(self._reader.readline(), self._timeout)
        except TimeoutError:
            raise _CloseError("-ERR autologout: idle for too long") from None
        except ValueError:  # longer than the reader's limit
            raise _CloseError("-ERR line too long") from None
        if not raw:
            raise EOFError()
        if len(raw) > limit:
            raise _CloseError("-ERR line too long")
        return raw.rstrip(b"\r\n").decode("utf-8", "replace")

    async def _send(self, *lines: str) -> None:
        self._writer.write("".join(f"{line}\r\n" for line in lines).encode("utf-8"))
        await self._writer.drain()

    async def _error(self, text: str) -> None:
        self._errors += 1
        if self._errors >= _ERROR_LIMIT:
            raise _CloseError(f"-ERR {text} (too many errors, closing)")
        await self._send(f"-ERR {text}")

    async def _dispatch(self, verb: str, arg: str) -> bool:
        """Run one command; False ends the session."""
        if verb == "QUIT":
            await self._quit()
            return False
        if verb in ("CAPA", "NOOP"):
            await (self._capa() if verb == "CAPA" else self._noop(arg))
            return True
        if self._drop is None:
            handler = {
                "USER": self._cmd_user,
                "PASS": self._cmd_pass,
                "AUTH": self._cmd_auth,
                "STLS": self._cmd_stls,
            }.get(verb)
        else:
            handler = {
                "STAT": self._cmd_stat,
                "LIST": self._cmd_list,
                "UIDL": self._cmd_uidl,
                "RETR": self._cmd_retr,
                "TOP": self._cmd_top,
                "DELE": self._cmd_dele,
                "RSET": self._cmd_rset,
            }.get(verb)
        if handler is None:
            await self._error("unknown command or not allowed now")
            return True
        await handler(arg)
        return True

    # -- authorization state -----------------------------------------------------------------

    async def _capa(self) -> None:
        lines = ["+OK capability list follows", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE"]
        lines += ["PIPELINING", "EXPIRE NEVER", "IMPLEMENTATION sitemail"]
        if self._drop is None:
            if self._tls:
                lines += ["USER", "SASL PLAIN"]
            else:
                lines.append("STLS")
        await self._send(*lines, ".")

    async def _noop(self, arg: str) -> None:
        if self._drop is None:
            await self._error("NOOP needs a login first")
        elif arg:
            await self._error("NOOP takes no argument")
        else:
            await self._send("+OK")

    async def _needs_tls(self) -> bool:
        if self._tls:
            return False
        await self._error("[AUTH] TLS is required first: use STLS")
        return True

    async def _cmd_stls(self, arg: str) -> None:
        if self._tls:
            await self._error("TLS is already active")
            return
        if arg:
            await self._error("STLS takes no argument")
            return
        await self._send("+OK begin TLS negotiation")
        # Anything pipelined after STLS in clear is an injection attempt: drop it before the
        # handshake (StreamReader._buffer is private; aiosmtpd clears it the same way).
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        await self._writer.start_tls(self._service.tls_context)
        self._tls = True
        self._user = ""

    async def _cmd_user(self, arg: str) -> None:
        if await self._needs_tls():
            return
        if not arg:
            await self._error("USER needs a name")
            return
        self._user = arg
        await self._send("+OK send PASS")

    async def _cmd_pass(self, arg: str) -> None:
        if await self._needs_tls():
            return
        if not self._user:
            await self._error("send USER first")
            return
        user, self._user = self._user, ""
        await self._login(user, arg)

    async def _cmd_auth(self, arg: str) -> None:
        if await self._needs_tls():
            return
        mechanism, _, initial = arg.partition(" ")
        if mechanism.upper() != "PLAIN":
            await self._error("unsupported mechanism (PLAIN)")
            return
        text = initial.strip()
        if not text:
            await self._send("+ ")
            text = (await self._line(_AUTH_LINE + 2)).strip()
        if text == "*":
            await self._error("authentication cancelled")
            return
        try:
            parts = base64.b64decode(text, validate=True).split(b"\0")
        except (binascii.Error, ValueError):
            await self._error("cannot decode the base64 response")
            return
        if len(parts) != 3:
            await self._error("malformed PLAIN credentials")
            return
        authzid, login, password = (p.decode("utf-8", "replace") for p in parts)
        if authzid and authzid.lower() != login.lower():
            await self._error("[AUTH] authorization as another user is not allowed")
            return
        await self._login(login, password)

    async def _login(self, login: str, password: str) -> None:
        result = await self._service.authenticator.authenticate(login, password, self._peer)
        if result.outcome is AuthOutcome.LOCKED:
            await self._error(f"[SYS/TEMP] {result.text}")
            return
        if not result.ok:
            log.info("pop3 auth failed peer=%s outcome=%s", self._peer, result.outcome)
            await self._error(f"[AUTH] {result.text}")
            return
        if result.mailbox in self._service.locked:
            await self._error("[IN-USE] the maildrop is open in another POP3 session")
            return
        self._service.locked.add(result.mailbox)
        self._auth = result
        try:
            self._drop = await asyncio.to_thread(self._open_maildrop, result.mailbox)
        except BaseException:
            self._release()
            self._auth = None
            raise
        count = len(self._drop.messages)
        size = sum(m.size for m in self._drop.messages)
        await self._send(f"+OK {result.alias} has {count} message(s) ({size} octets)")

    def _open_maildrop(self, mailbox: str) -> _Maildrop:
        now = self._service.clock.now()
        with self._service.store.write() as conn:
            folder_id = ensure_folders(conn, mailbox, now)["INBOX"]
            state = folder_state(conn, folder_id)
        assert state is not None
        return _Maildrop(folder_id, state.folder.uidvalidity, state.messages, set())

    # -- transaction state -------------------------------------------------------------------

    def _number(self, text: str) -> int | None:
        """A message number that exists and is not marked deleted, or None."""
        drop = self._drop
        assert drop is not None
        if not text.isdigit() or len(text) > 9:
            return None
        number = int(text)
        if not 1 <= number <= len(drop.messages) or number in drop.deleted:
            return None
        return number

    async def _cmd_stat(self, arg: str) -> None:
        drop = self._drop
        assert drop is not None
        if arg:
            await self._error("STAT takes no argument")
            return
        live = [m for n, m in enumerate(drop.messages, 1) if n not in drop.deleted]
        await self._send(f"+OK {len(live)} {sum(m.size for m in live)}")

    async def _listing(self, arg: str, value: str) -> None:
        drop = self._drop
        assert drop is not None

        def field(meta: MessageMeta) -> str:
            return str(meta.size) if value == "size" else f"{drop.uidvalidity}.{meta.uid}"

        if arg:
            number = self._number(arg)
            if number is None:
                await self._error("no such message")
                return
            await self._send(f"+OK {number} {field(drop.messages[number - 1])}")
            return
        lines = [f"{n} {field(m)}" for n, m in enumerate(drop.messages, 1) if n not in drop.deleted]
        await self._send("+OK", *lines, ".")

    async def _cmd_list(self, arg: str) -> None:
        await self._listing(arg, "size")

    async def _cmd_uidl(self, arg: str) -> None:
        await self._listing(arg, "uid")

    async def _content(self, number: int) -> bytes | None:
        drop = self._drop
        assert drop is not None
        uid = drop.messages[number - 1].uid

        def run() -> dict[int, bytes]:
            with self._service.store.read() as conn:
                return load_contents(conn, drop.folder_id, [uid])

        return (await asyncio.to_thread(run)).get(uid)

    async def _send_message(self, content: bytes) -> None:
        lines = _LINE_END.split(content)
        if lines and lines[-1] == b"":
            lines.pop()
        out = bytearray(b"+OK message follows\r\n")
        for line in lines:
            if line.startswith(b"."):
                out += b"."
            out += line + b"\r\n"
        out += b".\r\n"
        self._writer.write(bytes(out))
        await self._writer.drain()

    async def _cmd_retr(self, arg: str) -> None:
        number = self._number(arg)
        if number is None:
            await self._error("no such message")
            return
        content = await self._content(number)
        if content is None:
            await self._error("message was removed by another session")
            return
        await self._send_message(content)

    async def _cmd_top(self, arg: str) -> None:
        words = arg.split()
        if len(words) != 2 or not words[1].isdigit() or len(words[1]) > 9:
            await self._error("usage: TOP msg n")
            return
        number = self._number(words[0])
        if number is None:
            await self._error("no such message")
            return
        content = await self._content(number)
        if content is None:
            await self._error("message was removed by another session")
            return
        match = re.search(rb"\r?\n\r?\n", content)
        if match is None:
            head, body = content, b""
        else:
            head, body = content[: match.end()], content[match.end() :]
        body_lines = _LINE_END.split(body)
        if body_lines and body_lines[-1] == b"":
            body_lines.pop()  # the text's final line end
        top = head + b"".join(line + b"\r\n" for line in body_lines[: int(words[1])])
        await self._send_message(top)

    async def _cmd_dele(self, arg: str) -> None:
        drop = self._drop
        assert drop is not None
        number = self._number(arg)
        if number is None:
            await self._error("no such message")
            return
        drop.deleted.add(number)
        await self._send(f"+OK message {number} deleted")

    async def _cmd_rset(self, arg: str) -> None:
        drop = self._drop
        assert drop is not None
        del arg
        drop.deleted.clear()
        await self._send(f"+OK maildrop has {len(drop.messages)} message(s)")

    async def _quit(self) -> None:
        drop = self._drop
        if drop is None or not drop.deleted:
            await self._send("+OK bye")
            return
        uids = [drop.messages[n - 1].uid for n in sorted(drop.deleted)]

        def run() -> int:
            with self._service.store.write() as conn:
                return delete_messages(conn, drop.folder_id, uids)

        try:
            removed = await asyncio.to_thread(run)
        except Exception:
            log.exception("pop3 update failed peer=%s", self._peer)
            await self._send("-ERR [SYS/TEMP] some deleted messages not removed")
            return
        await self._send(f"+OK {removed} message(s) deleted, bye")
