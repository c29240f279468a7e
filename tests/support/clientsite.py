"""One real site server for client-access tests, run in a thread with its own event loop.

The tests talk to it with blocking stdlib clients (imaplib, poplib, smtplib) and Debian's
programs, exactly as a user's mail client would: real sockets on a 127.10.70.x address, free
ports, the site's self-signed certificate (verification off: it names the server, not the
test's address). `restart()` stops the server and starts a new one on the same data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import imaplib
import poplib
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.databases import new_database_url

from sitemail.admin.service import AdminService
from sitemail.config import ServerConfig, load_config
from sitemail.directory import ObjectKind
from sitemail.mailbox import list_messages
from sitemail.site import SiteServer

PASSWORD = "correct horse battery staple"


def free_port(host: str) -> int:
    return free_ports(host, 1)[0]


def free_ports(host: str, count: int) -> list[int]:
    """`count` different free ports: each probe stays bound until all are chosen (probes
    closed one by one could be handed the same port twice, and the second listener of the
    site would then fail to bind)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind((host, 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class ClientSite:
    address: str
    data_dir: Path
    config: ServerConfig
    service: AdminService
    ports: dict[str, int] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _task: asyncio.Task[None] | None = None
    _thread: threading.Thread | None = None
    server: SiteServer | None = None

    @property
    def domain(self) -> str:
        return "sitea.example.com"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self.server = SiteServer(self.config)

            async def main() -> None:
                self._task = asyncio.current_task()
                try:
                    assert self.server is not None
                    await self.server.run(lambda _s: ready.set())
                except asyncio.CancelledError:
                    pass
                except BaseException as exc:
                    failure.append(exc)
                    ready.set()

            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"site-{self.address}", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise AssertionError("server did not start in time")
        if failure:
            raise failure[0]

    def stop(self) -> None:
        loop, task, thread = self._loop, self._task, self._thread
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        if thread is not None:
            # The server promises to stop within [server] shutdown_timeout (30 s); wait past
            # that bound, not exactly at it, so a stop that takes its whole window still counts.
            thread.join(self.config.shutdown_timeout + 15)
            assert not thread.is_alive(), "server did not stop within its shutdown timeout"
        self._loop = self._task = self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def call(self, function: Any) -> Any:
        """Run a coroutine function in the server's loop and wait for its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(function(), self._loop).result(30)

    # -- data ------------------------------------------------------------------------------

    def add_user(self, alias: str, *, password: str = PASSWORD, extra: tuple[str, ...] = ()) -> str:
        mailbox = self.service.add_recipient(
            ObjectKind.MAILBOX,
            alias,
            display_name=alias.title(),
            password=password,
            extra_addresses=list(extra),
        )
        return mailbox.primary_smtp

    def wait_for_inbox(self, alias: str, count: int) -> list[bytes]:
        """Local delivery is asynchronous: wait (bounded) until INBOX holds `count` messages."""
        pause = threading.Event()
        for _ in range(500):
            messages = self.inbox(alias)
            if len(messages) >= count:
                return messages
            pause.wait(0.02)
        raise AssertionError(f"{alias}'s INBOX never reached {count} messages")

    def inbox(self, alias: str, folder: str = "INBOX") -> list[bytes]:
        guid = self.service.directory.get(alias).guid
        with self.service.store.read() as conn:
            return [m.content for m in list_messages(conn, guid, folder)]

    # -- clients ---------------------------------------------------------------------------

    def imap(self) -> imaplib.IMAP4:
        """A plain-text connection on the STARTTLS port (not yet secured)."""
        return imaplib.IMAP4(self.address, self.ports["imap"], timeout=20)

    def imap_tls(self, user: str = "", password: str = PASSWORD) -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL(
            self.address, self.ports["imaps"], ssl_context=client_tls(), timeout=20
        )
        if user:
            client.login(user, password)
        return client

    def pop3(self) -> poplib.POP3:
        return poplib.POP3(self.address, self.ports["pop3"], timeout=20)

    def pop3_tls(self) -> poplib.POP3_SSL:
        return poplib.POP3_SSL(self.address, self.ports["pop3s"], context=client_tls(), timeout=20)

    def smtp(self) -> smtplib.SMTP:
        """The MX port (25 on a real server): mail from outside."""
        return smtplib.SMTP(
            self.address, self.ports["smtp"], local_hostname="client.test", timeout=20
        )

    def submission(self) -> smtplib.SMTP:
        return smtplib.SMTP(
            self.address, self.ports["submission"], local_hostname="client.test", timeout=20
        )

    def submissions(self) -> smtplib.SMTP_SSL:
        return smtplib.SMTP_SSL(
            self.address,
            self.ports["submissions"],
            local_hostname="client.test",
            context=client_tls(),
            timeout=20,
        )

    def deliver(self, rcpt: str, subject: str, body: str = "hello") -> None:
        """Mail from outside through the MX port, as any other site's mail arrives."""
        message = (
            f"From: outsider@outside.test\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@outside.test>\r\n\r\n{body}\r\n"
        )
        with self.smtp() as client:
            client.sendmail("outsider@outside.test", [rcpt], message.encode())


@contextmanager
def client_site(
    tmp_path: Path,
    address: str,
    *,
    auth: dict[str, Any] | None = None,
    imap: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    admin: dict[str, Any] | None = None,
    site: str = "SiteA",
    database_url: str | None = None,
) -> Iterator[ClientSite]:
    """A running SiteA on `address` with every client-access listener on a free port
    (on `database_url`, else the run's database: tests/support/databases.py)."""
    data_dir = tmp_path / site
    service = AdminService.init(
        data_dir,
        org="ExchangeORG",
        site=site,
        server="ServerA",
        domain=f"{site.lower()}.example.com",
        listen=[address],
        database_url=new_database_url() if database_url is None else database_url,
    )
    site_handle = serve_data_dir(
        data_dir, service, address, auth=auth, imap=imap, limits=limits, admin=admin
    )
    try:
        yield site_handle
    finally:
        site_handle.stop()
        service.close()


def serve_data_dir(
    data_dir: Path,
    service: AdminService,
    address: str,
    *,
    auth: dict[str, Any] | None = None,
    imap: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    admin: dict[str, Any] | None = None,
) -> ClientSite:
    """Start the server of `data_dir` on `address`, every listener on a free port."""
    names = ("smtp", "imap", "imaps", "pop3", "pop3s", "submission", "submissions", "admin")
    ports = dict(zip(names, free_ports(address, len(names)), strict=True))
    config = load_config(data_dir)
    config = dataclasses.replace(
        config,
        smtp=dataclasses.replace(config.smtp, port=ports["smtp"]),
        imap=dataclasses.replace(
            config.imap, port=ports["imap"], tls_port=ports["imaps"], **(imap or {})
        ),
        pop3=dataclasses.replace(config.pop3, port=ports["pop3"], tls_port=ports["pop3s"]),
        submission=dataclasses.replace(
            config.submission, port=ports["submission"], tls_port=ports["submissions"]
        ),
        auth=dataclasses.replace(config.auth, **({"failure_delay": 0.05} | (auth or {}))),
        limits=dataclasses.replace(config.limits, **(limits or {})),
        admin=dataclasses.replace(config.admin, port=ports["admin"], **(admin or {})),
    )
    site_handle = ClientSite(address, data_dir, config, service, ports)
    site_handle.start()
    return site_handle
