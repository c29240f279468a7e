"""IMAP and POP3 served from supervised worker processes, so no client of theirs stops SMTP.

One job: run each client-access protocol (IMAP, POP3) in its own worker process and keep it
alive. The server binds the listening sockets itself (a port that cannot be bound is still a
configuration error at start), then starts `python -m sitemail.frontends` with those sockets
and a pickled `WorkerSpec` on its stdin. The worker opens its own store connection (SQLite in
WAL mode or PostgreSQL: the mailbox tables are shared through the database, as with local
delivery) and serves until told to stop.

Supervision: the worker writes a heartbeat (an empty line) to its stdout every `HEARTBEAT`
seconds from its event loop. Logins are not checked in the worker: it asks the server
("A <n> <request>" on its stdout) and the server's one `Authenticator` answers ("R <n>
<result>" on the worker's stdin), so failures, lock-outs and the slots that make parallel
attempts count are one table for IMAP, POP3 and submission alike, whichever process serves
the client (directory/auth.py). A worker whose loop is stuck (no heartbeat for `stuck_after` seconds) is killed
and replaced; one that exits is replaced; both are logged with the cause. Replacements back off
(up to 30 s) when workers die young, so a crash at start cannot spin. Sessions of the replaced
worker are lost (their clients reconnect); the listening sockets stay open meanwhile, so new
connections wait in the backlog. SMTP and the queue run in the server process and never wait
for a worker. `stop()` sends SIGTERM and kills what has not exited after `STOP_GRACE` seconds;
a worker whose server disappears exits (stdin closes; Linux also sends it SIGKILL).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import itertools
import json
import logging
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from sitemail.config import ServerConfig
from sitemail.core.clock import SystemClock
from sitemail.core.errors import ConfigError
from sitemail.core.events import AuthFailed, emit
from sitemail.core.tls import ReloadingContext
from sitemail.directory.auth import (
    LOCKED_TEXT,
    MAX_PASSWORD,
    Authenticator,
    AuthOutcome,
    AuthResult,
)
from sitemail.imap import ImapService
from sitemail.pop3 import Pop3Service
from sitemail.store import default_url, open_store

__all__ = ["HEARTBEAT", "WorkerPool", "WorkerSpec"]

log = logging.getLogger("sitemail.frontends")

HEARTBEAT: Final = 0.5  # seconds between a worker's heartbeats
STUCK_AFTER: Final = 15.0  # no heartbeat for this long: the worker is stuck
STOP_GRACE: Final = 5.0  # SIGTERM, then SIGKILL after this long
_READY_TIMEOUT: Final = 60.0  # start-up of a worker (imports, store, listeners)
_YOUNG: Final = 5.0  # a worker that dies younger than this makes the next start wait
_PR_SET_PDEATHSIG: Final = 1
_AUTH_TIMEOUT: Final = 60.0  # a login the server has not answered by then is refused
_MAX_LOGIN_TOKEN: Final = 4000  # bytes: "A <n> <token>\n" stays within PIPE_BUF


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker needs: the server's config, its protocol, and its listeners as
    (inherited file descriptor, implicit TLS) pairs."""

    config: ServerConfig
    kind: str  # "imap" or "pop3"
    server_name: str
    listeners: list[tuple[int, bool]] = field(default_factory=list)


class WorkerPool:
    """The worker process of one protocol: listeners bound here, served there, supervised."""

    def __init__(
        self,
        kind: str,
        config: ServerConfig,
        server_name: str,
        *,
        authenticator: Authenticator | None = None,
        stuck_after: float = STUCK_AFTER,
    ) -> None:
        self.kind = kind
        self._authenticator = authenticator  # the server's: lock-outs shared by every protocol
        self._config = config
        self._server_name = server_name
        self._stuck_after = stuck_after
        self._sockets: list[tuple[socket.socket, bool]] = []
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._relays: set[asyncio.Task[None]] = set()  # workers' log lines into our log
        self._logins: set[asyncio.Task[None]] = set()  # workers' logins being checked
        self.replaced = 0  # how many workers were replaced (stuck or exited)

    @property
    def pid(self) -> int | None:
        """The current worker's process id (None before `launch`)."""
        return self._process.pid if self._process is not None else None

    def bind(self, address: str, port: int, *, implicit_tls: bool) -> int:
        """Listen on address:port (0: any free port) for the worker; the bound port."""
        sock = socket.create_server((address, port), backlog=128)
        self._sockets.append((sock, implicit_tls))
        return int(sock.getsockname()[1])

    def _report(self, line: bytes) -> None:
        """A line from the worker: a login to check ("A <n> <request>")."""
        parts = line.split()
        if len(parts) == 3 and parts[0] == b"A" and self._authenticator is not None:
            task = asyncio.create_task(self._answer_login(self._process, parts[1], parts[2]))
            self._logins.add(task)
            task.add_done_callback(self._logins.discard)

    async def _answer_login(
        self, process: asyncio.subprocess.Process | None, number: bytes, request: bytes
    ) -> None:
        """Check a worker's login with the server's Authenticator; answer "R <n> <result>"."""
        assert self._authenticator is not None
        try:
            login, password, peer = decode_login(request)
        except ValueError:
            log.warning("%s worker sent a login request that does not parse", self.kind)
            return
        result = await self._authenticator.authenticate(login, password, peer)
        if not result.ok:
            emit(AuthFailed(self.kind, peer, str(result.outcome)))
        if process is not None and process.stdin is not None and not process.stdin.is_closing():
            process.stdin.write(b"R %s %s\n" % (number, encode_result(result)))

    def signal(self, number: int) -> None:
        """Pass a signal on to the worker (SIGHUP: read the TLS certificate again)."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(number)

    async def launch(self) -> None:
        """Start the worker (once every listener is bound) and its supervision."""
        if not self._sockets or self._watcher is not None:
            return
        await self._start()
        self._watcher = asyncio.create_task(self._watch(), name=f"{self.kind}-worker-watch")

    async def stop(self) -> None:
        """End the worker: SIGTERM, then SIGKILL after STOP_GRACE; close the listeners."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        for task in list(self._logins):
            task.cancel()
        if self._process is not None:
            await _end(self._process, STOP_GRACE)
            self._process = None
        for sock, _ in self._sockets:
            sock.close()
        self._sockets.clear()

    async def _start(self) -> None:
        spec = WorkerSpec(
            self._config,
            self.kind,
            self._server_name,
            [(sock.fileno(), implicit) for sock, implicit in self._sockets],
        )
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sitemail.frontends",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=[sock.fileno() for sock, _ in self._sockets],
            )
        except OSError as exc:  # e.g. an interpreter the server's user may not run
            raise ConfigError(
                f"cannot start the {self.kind} worker ({sys.executable}): {exc.strerror}"
            ) from exc
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(pickle.dumps(spec))
        await process.stdin.drain()  # stdin stays open: its end tells the worker we are gone
        self._process = process
        assert process.stderr is not None
        relay = asyncio.create_task(_relay_log(process.stderr, self.kind))
        self._relays.add(relay)
        relay.add_done_callback(self._relays.discard)
        try:
            first = await asyncio.wait_for(process.stdout.read(1), _READY_TIMEOUT)
        except TimeoutError:
            first = b""
        if not first:
            await _end(process, 0)
            raise ConfigError(f"the {self.kind} worker did not start (see its error above)")
        log.info("%s worker pid=%d serving", self.kind, process.pid)

    async def _watch(self) -> None:
        """Replace the worker when it is stuck or gone, for as long as the server runs."""
        backoff = 0.0
        while True:
            process = self._process
            assert process is not None
            started = time.monotonic()
            cause = await _until_unhealthy(process, self._stuck_after, self._report)
            await _end(process, 0)
            log.error(
                "%s worker pid=%d %s; replacing it (SMTP is not affected)",
                self.kind,
                process.pid,
                cause,
            )
            self.replaced += 1
            young = time.monotonic() - started < _YOUNG
            backoff = min(max(backoff * 2, 1.0), 30.0) if young else 0.0
            await asyncio.sleep(backoff)
            try:
                await self._start()
            except ConfigError as exc:
                log.warning("%s; trying again", exc)  # after a longer wait
                self._process = process


async def _relay_log(stream: asyncio.StreamReader, kind: str) -> None:
    """The worker's log lines ("<level> <logger> <message>", then any traceback lines) into
    this process's log: one log for the server and its workers."""
    level, logger = logging.ERROR, log
    while line := await stream.readline():
        text = line.decode("utf-8", "replace").rstrip("\n")
        head, _, rest = text.partition(" ")
        name, _, message = rest.partition(" ")
        if (head.isdigit() and name.startswith("sitemail")) or name in ("asyncio", "root"):
            level, logger = int(head), logging.getLogger(name)
            logger.log(level, "[%s worker] %s", kind, message)
        else:  # a continuation (a traceback) or a line the worker wrote outside logging
            logger.log(level, "[%s worker] %s", kind, text)


async def _until_unhealthy(
    process: asyncio.subprocess.Process, stuck_after: float, report: Callable[[bytes], None]
) -> str:
    """Wait while heartbeats come (passing on the worker's reports); why the worker is
    unhealthy when they stop."""
    assert process.stdout is not None
    pending = b""
    while True:
        try:
            data = await asyncio.wait_for(process.stdout.read(4096), stuck_after)
        except TimeoutError:
            return f"is stuck (no heartbeat for {stuck_after:g} s): killed"
        if not data:
            code = await process.wait()
            how = f"signal {-code}" if code < 0 else f"code {code}"
            return f"exited ({how})"
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            if line:  # an empty line is a heartbeat
                report(line)


async def _end(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds (at once when grace is 0); reaped."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM if grace else signal.SIGKILL)
        try:
            await asyncio.wait_for(process.wait(), grace or None)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    if process.stdin is not None:
        process.stdin.close()


# -- the worker process ------------------------------------------------------------------------


def _certificates(config: ServerConfig) -> ReloadingContext:
    """The server's TLS policy (core.tls), the certificate reloaded here too on `tls set`."""
    cert, key = config.path(config.tls.cert_file), config.path(config.tls.key_file)
    return ReloadingContext(cert, key)


# -- logins, checked by the server ---------------------------------------------------------------


def _b64(value: bytes) -> bytes:
    return base64.b64encode(value)


def encode_login(login: str, password: str, peer_ip: str) -> bytes:
    """A worker's login request, one token for its line. The line must fit in one atomic
    pipe write (PIPE_BUF, 4,096 bytes: stdout is non-blocking, and a line written in part
    would garble the next); a request too big for that is one no mailbox can pass, so it goes
    as one the server refuses and counts alike (a name cut short, a password over its
    bound)."""
    token = _b64(json.dumps([login, password, peer_ip], ensure_ascii=False).encode())
    if len(token) <= _MAX_LOGIN_TOKEN:
        return token
    over_long = "x" * (MAX_PASSWORD + 1)
    return _b64(json.dumps([login[:64], over_long, peer_ip], ensure_ascii=False).encode())


def decode_login(token: bytes) -> tuple[str, str, str]:
    """(login, password, peer) from `encode_login`'s token; ValueError when it is not one."""
    try:
        value = json.loads(base64.b64decode(token, validate=True))
    except (ValueError, TypeError) as exc:
        raise ValueError("not a login request") from exc
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value)):
        raise ValueError("not a login request")
    return value[0], value[1], value[2]


def encode_result(result: AuthResult) -> bytes:
    """The server's answer to a login, one token for its line."""
    fields = [
        result.outcome.value,
        result.text,
        result.mailbox,
        result.alias,
        sorted(result.addresses),
        result.home_site,
        result.home_host,
    ]
    return _b64(json.dumps(fields).encode())


def decode_result(token: bytes) -> AuthResult:
    """`encode_result`'s token back; ValueError when it is not one."""
    try:
        outcome, text, mailbox, alias, addresses, site, host = json.loads(
            base64.b64decode(token, validate=True)
        )
        return AuthResult(
            AuthOutcome(outcome), text, mailbox, alias, frozenset(addresses), site, host
        )
    except (ValueError, TypeError) as exc:
        raise ValueError("not a login result") from exc


class _ServerAuthenticator:
    """The worker's `Authenticates`: every login is the server's to check (one table of
    failures and lock-outs for every protocol; see the module docstring)."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self._waiting: dict[bytes, asyncio.Future[AuthResult]] = {}

    async def authenticate(self, login: str, password: str, peer_ip: str) -> AuthResult:
        number = str(next(self._numbers)).encode()
        answer: asyncio.Future[AuthResult] = asyncio.get_running_loop().create_future()
        self._waiting[number] = answer
        try:
            _write_line(b"A %s %s" % (number, encode_login(login, password, peer_ip)))
            return await asyncio.wait_for(answer, _AUTH_TIMEOUT)
        except (TimeoutError, OSError):  # the server is busy or gone: no login, no guessing
            return AuthResult(AuthOutcome.LOCKED, LOCKED_TEXT)
        finally:
            self._waiting.pop(number, None)

    def answered(self, number: bytes, token: bytes) -> None:
        """The server's "R <n> <result>" line."""
        answer = self._waiting.get(number)
        if answer is None or answer.done():
            return
        try:
            answer.set_result(decode_result(token))
        except ValueError:
            answer.set_result(AuthResult(AuthOutcome.LOCKED, LOCKED_TEXT))


def _write_line(line: bytes) -> None:
    """One line to the server on stdout (lines stay under PIPE_BUF: written whole or not)."""
    os.write(1, line + b"\n")


async def _serve(spec: WorkerSpec) -> None:
    config = spec.config
    store = open_store(config.database_url or default_url(config.data_dir))
    clock = SystemClock()

    authenticator = _ServerAuthenticator()
    certificates = _certificates(config)
    tls = certificates.context
    # SIGHUP (the server's reload): the certificate now, not at its next check
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGHUP, lambda: certificates.refresh(force=True)
    )
    service: ImapService | Pop3Service
    if spec.kind == "imap":
        service = ImapService(
            store=store,
            clock=clock,
            authenticator=authenticator,
            settings=config.imap,
            limits=config.limits,
            tls_context=tls,
            server_name=spec.server_name,
        )
    else:
        service = Pop3Service(
            store=store,
            clock=clock,
            authenticator=authenticator,
            limits=config.limits,
            tls_context=tls,
            server_name=spec.server_name,
        )
    try:
        for fd, implicit in spec.listeners:
            sock = socket.socket(fileno=fd)
            await service.start("", 0, implicit_tls=implicit, sock=sock)
        await _beat_until_orphaned(authenticator)
    finally:
        await service.stop()
        store.close()


async def _beat_until_orphaned(authenticator: _ServerAuthenticator) -> None:
    """Heartbeats on stdout from this loop, login results from stdin ("R <n> <result>");
    returns when stdin ends (the server is gone)."""
    loop = asyncio.get_running_loop()
    orphaned = loop.create_future()
    pending = b""

    def stdin_readable() -> None:
        nonlocal pending
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return
        if not data and not orphaned.done():
            orphaned.set_result(None)
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"R":
                authenticator.answered(parts[1], parts[2])

    os.set_blocking(1, False)  # a server that stops reading must not block this loop
    loop.add_reader(0, stdin_readable)
    try:
        while not orphaned.done():
            with contextlib.suppress(BlockingIOError):
                os.write(1, b"\n")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(orphaned), HEARTBEAT)
    finally:
        loop.remove_reader(0)


def main() -> None:
    """`python -m sitemail.frontends`: one worker, spec on stdin (see `WorkerPool`)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload before our handler is set
    with contextlib.suppress(OSError, AttributeError):  # Linux: die with the server
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    spec: WorkerSpec = pickle.load(sys.stdin.buffer)  # noqa: S301 - our own server, by a pipe
    # one line per record on stderr, which the server reads into its own log
    logging.basicConfig(level=logging.INFO, format="%(levelno)d %(name)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)

    async def run() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            if task is not None:
                loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await _serve(spec)

    asyncio.run(run())


if __name__ == "__main__":
    main()
