"""One real site on loopback with the lab's DNS server beside it: the mail-authentication harness.

The site (SiteA of ExchangeORG, domain sitea.example.com, a mailbox `jsmith`) runs in its own
thread and event loop with the real clock, so its queue delivers at once; its `[dns]` points
at an `EmbeddedDnsServer` serving the zones the test fills (SPF, DKIM and DMARC records of
outside domains, our own published records). Mail "from the Internet" is sent with smtplib
from a chosen loopback source address, which is what SPF judges.
"""

from __future__ import annotations

import asyncio
import dataclasses
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.org import free_port

from sitemail.admin.service import AdminService
from sitemail.config import load_config
from sitemail.directory import ObjectKind
from sitemail.lab.dns_server import EmbeddedDnsServer
from sitemail.mailauth.dkimkeys import dkim_public_records
from sitemail.mailbox.store import list_messages
from sitemail.site import SiteServer

DOMAIN = "sitea.example.com"


@dataclass
class EdgeSite:
    service: AdminService
    server: SiteServer
    dns: EmbeddedDnsServer
    address: str
    port: int

    def send(
        self, source: str, sender: str, recipients: list[str], body: bytes, helo: str = "mx.test"
    ) -> tuple[int, str]:
        """One transaction from `source`: the DATA reply (code, text), or the refusal's."""
        with smtplib.SMTP(
            self.address, self.port, local_hostname=helo, source_address=(source, 0), timeout=30
        ) as client:
            try:
                client.sendmail(sender, recipients, body)
            except smtplib.SMTPDataError as exc:
                return exc.smtp_code, exc.smtp_error.decode()
            return 250, "ok"

    def folder(self, alias: str, folder: str = "INBOX") -> list[bytes]:
        guid = self.service.get_recipient(alias, ObjectKind.MAILBOX).guid
        with self.service.store.read() as conn:
            return [m.content for m in list_messages(conn, guid, folder)]

    def wait_for(self, alias: str, folder: str, count: int, limit: float = 20.0) -> list[bytes]:
        """The folder once it holds `count` messages (the queue delivers at once)."""
        deadline = time.monotonic() + limit
        while len(found := self.folder(alias, folder)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{folder} of {alias} has {len(found)} messages, not {count}")
            time.sleep(0.05)
        return found

    def publish_own_records(self) -> None:
        """Our DKIM keys in DNS, as `sitemail dns records` would have the admin publish."""
        for record in dkim_public_records(self.service.config.data_dir, [DOMAIN]):
            self.dns.add(record.name, "TXT", record.zone_text())


def txt(value: str) -> str:
    """Zone text of a TXT value of any length (quoted strings of 255 octets at most)."""
    return " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))


@contextmanager
def edge_site(
    root: Path,
    address: str,
    dns_address: str,
    zones: list[str],
    *,
    dns_port: int = 0,
    tune: Callable[[Any], Any] = lambda config: config,
) -> Iterator[EdgeSite]:
    """The site serving on `address`, its DNS on `dns_address` (port `dns_port`, 0: a free
    one); stopped on exit."""
    service = AdminService.init(
        root / "SiteA",
        org="ExchangeORG",
        site="SiteA",
        server="ServerA",
        domain=DOMAIN,
        listen=[address],
    )
    service.add_recipient(ObjectKind.MAILBOX, "jsmith", display_name="John Smith")
    with EmbeddedDnsServer(dns_address, dns_port, zones=[DOMAIN, *zones]) as dns:
        port = free_port(address)
        config = load_config(root / "SiteA")
        config = dataclasses.replace(
            config,
            smtp=dataclasses.replace(config.smtp, port=port),
            dns=dataclasses.replace(config.dns, nameservers=(f"{dns.address}:{dns.port}",)),
            admin=dataclasses.replace(config.admin, port=0),
            imap=dataclasses.replace(config.imap, port=0, tls_port=0),
            pop3=dataclasses.replace(config.pop3, port=0, tls_port=0),
            submission=dataclasses.replace(config.submission, port=0, tls_port=0),
        )
        server = SiteServer(tune(config))
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        task: list[asyncio.Task[None]] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            task.append(loop.create_task(server.run(lambda _s: ready.set())))
            loop.run_until_complete(asyncio.gather(*task, return_exceptions=True))

        thread = threading.Thread(target=serve, name="edge-site", daemon=True)
        thread.start()
        try:
            if not ready.wait(20):
                raise AssertionError("the site did not start within 20 s")
            yield EdgeSite(service, server, dns, address, port)
        finally:
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in task])
            thread.join(30)
            loop.close()
            service.close()
