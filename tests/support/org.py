"""Several real sites on 127.10.10.x replicating and routing over real SMTP: the harness.

Each site is a `SiteServer` with its own data dir, address and port, in the test's event loop.
Sites reach each other through domain routes ("forward all mail for siteb.example.com to
127.10.10.32:port"), exactly as the article configures the IMS. The scheduler's start-up
request is pushed out of the way (`startup_delay`), so each test decides when to replicate
with `request_now`, and a CLI-style nudge (admin/wake.py) wakes the queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import smtplib
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from tests.support.databases import new_database_url

from sitemail.admin.service import AdminService
from sitemail.admin.wake import poke
from sitemail.config import AdminConfig, load_config
from sitemail.directory import ObjectKind
from sitemail.mailbox.store import StoredMessage, list_messages
from sitemail.replication.replicator import RequestOutcome
from sitemail.site import SiteServer
from sitemail.store.tables import dir_object, proxy_address, proxy_conflict

ADDRESSES = {"SiteA": "127.10.10.31", "SiteB": "127.10.10.32", "SiteC": "127.10.10.33"}
# The article's addresses (cross-site routing tests); the lab listens on port 25 there, the
# tests on free ports, so both can run at once.
ARTICLE_ADDRESSES = {"SiteA": "127.10.10.10", "SiteB": "127.10.10.15", "SiteC": "127.10.10.20"}


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Site:
    name: str
    address: str
    data_dir: Path
    service: AdminService
    port: int
    settings: dict[str, float] = field(default_factory=dict)  # [replication] overrides
    server: SiteServer | None = None
    task: asyncio.Task[None] | None = None

    @property
    def domain(self) -> str:
        return f"{self.name.lower()}.example.com"

    def key(self) -> str:
        return self.service.site_key()[0]

    def add_mailboxes(self, count: int, prefix: str = "user") -> None:
        """Many mailboxes in one transaction, through `directory import` (the bulk path)."""
        lines = (
            json.dumps(
                {
                    "guid": str(uuid.uuid4()),
                    "site": self.name,
                    "kind": "mailbox",
                    "name": f"{prefix}{i}",
                    "display_name": f"{prefix} {i}",
                    "attrs": {"proxies": [f"SMTP:{prefix}{i}@{self.domain}"]},
                    "usn_changed": 0,
                    "version": 1,
                    "is_deleted": False,
                }
            )
            for i in range(count)
        )
        self.service.import_directory(lines)

    def request_now(self, peer: str, *, refresh_all: bool = False) -> RequestOutcome:
        outcome = self.service.replication.request_now(peer, refresh_all=refresh_all)
        poke(self.data_dir)
        return outcome

    def snapshot(self, nc: str | None = None) -> list[tuple[Any, ...]]:
        """The directory as rows (objects, index, conflicts), for byte-for-byte comparison."""
        with self.service.store.read() as conn:
            objects = select(dir_object).order_by(dir_object.c.guid)
            if nc is not None:
                objects = objects.where(dir_object.c.site == nc)
            rows = [tuple(r) for r in conn.execute(objects)]
            if nc is None:
                rows += [
                    tuple(r)
                    for r in conn.execute(
                        select(proxy_address).order_by(proxy_address.c.address_key)
                    )
                ]
                rows += [
                    tuple(r)
                    for r in conn.execute(
                        select(proxy_conflict).order_by(
                            proxy_conflict.c.address_key, proxy_conflict.c.guid
                        )
                    )
                ]
        return rows

    def replica(self, nc: str) -> list[tuple[Any, ...]]:
        """Objects of naming context `nc` as the owner would hand them out (no local columns)."""
        return self.snapshot(nc)

    def aliases(self, nc: str, kind: ObjectKind = ObjectKind.MAILBOX) -> set[str]:
        return {o.alias for o in self.service.directory.list_objects(kind, site=nc)}

    def inbox(self, alias: str) -> list[StoredMessage]:
        """The INBOX of this site's mailbox `alias`."""
        guid = self.service.get_recipient(alias, ObjectKind.MAILBOX).guid
        with self.service.store.read() as conn:
            return list_messages(conn, guid)

    def send(self, sender: str, recipients: list[str], body: bytes) -> dict[str, Any]:
        """One SMTP transaction from outside (refused recipients come back, as smtplib does)."""
        with smtplib.SMTP(self.address, self.port, local_hostname="client.test", timeout=10) as c:
            return dict(c.sendmail(sender, recipients, body))

    def retry_queue(self) -> None:
        """`sitemail queue retry` for every message, and the nudge the CLI gives."""
        self.service.queue.retry(None)
        poke(self.data_dir)


@dataclass
class Org:
    root: Path
    sites: dict[str, Site] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=lambda: dict(ADDRESSES))

    def create(self, name: str, **replication: float) -> Site:
        address = self.addresses[name]
        data_dir = self.root / name
        service = AdminService.init(
            data_dir,
            org="ExchangeORG",
            site=name,
            server=f"Server{name[-1]}",
            domain=f"{name.lower()}.example.com",
            listen=[address],
            database_url=new_database_url(),
        )
        settings = {"startup_delay": 3600.0, **replication}
        site = Site(name, address, data_dir, service, free_port(address), settings)
        self.sites[name] = site
        return site

    async def start(self, site: Site) -> None:
        config = load_config(site.data_dir)
        config = dataclasses.replace(
            config,
            smtp=dataclasses.replace(config.smtp, port=site.port),
            replication=dataclasses.replace(config.replication, **site.settings),
            admin=AdminConfig(listen=site.address, port=free_port(site.address)),
            # No client access here: its standard ports are privileged and may be taken (a
            # lab running on the article's addresses); the client-access tests have their own.
            imap=dataclasses.replace(config.imap, port=0, tls_port=0),
            pop3=dataclasses.replace(config.pop3, port=0, tls_port=0),
            submission=dataclasses.replace(config.submission, port=0, tls_port=0),
        )
        server = SiteServer(config)
        ready = asyncio.Event()
        site.server = server
        site.task = asyncio.create_task(server.run(lambda _s: ready.set()))
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait({waiting, site.task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiting.cancel()
            if site.task.done():
                site.task.result()  # the server's own error (a port in use, ...), not a timeout
            raise AssertionError(f"{site.name} did not start within 10 s")

    async def stop(self, site: Site) -> None:
        if site.task is not None:
            site.task.cancel()
            done, _ = await asyncio.wait({site.task}, timeout=15)
            if not done:
                stacks = io.StringIO()
                for task in asyncio.all_tasks():
                    task.print_stack(file=stacks)
                raise AssertionError(
                    f"{site.name} did not stop within 15 s of cancellation:\n{stacks.getvalue()}"
                )
        site.task = None
        site.server = None

    def connect(self, a: Site, b: Site, *, schedule: str = "never") -> None:
        """A pulls from B: a connector at A pinning B's key, and a route to B's domain."""
        a.service.replication.add_connector(
            b.name,
            bridgehead=f"Server{b.name[-1]}",
            routing_address=b.domain,
            peer_key=b.key(),
            schedule=schedule,
        )
        self.route(a, b)

    def link(self, a: Site, b: Site, **options: Any) -> None:
        """A sends B's mail to B: a Connected Sites entry at A, and the route to B's domain."""
        a.service.routing.add_connected_site(b.name, b.domain, **options)
        self.route(a, b)

    def route(self, a: Site, b: Site) -> None:
        if b.domain not in {r.domain for r in a.service.list_domain_routes()}:
            a.service.add_domain_route(b.domain, f"{b.address}:{b.port}")

    async def close(self) -> None:
        for site in self.sites.values():
            await self.stop(site)
            site.service.close()


@asynccontextmanager
async def organisation(root: Path, addresses: dict[str, str] | None = None) -> AsyncIterator[Org]:
    org = Org(root, addresses=dict(addresses or ADDRESSES))
    try:
        yield org
    finally:
        await org.close()


async def until(check: Callable[[], bool], limit: float = 20.0, what: str = "condition") -> None:
    """Poll `check` (in a thread: it touches the database) until true or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await asyncio.to_thread(check):
        if loop.time() > deadline:
            detail = getattr(check, "explain", lambda: "")()
            raise AssertionError(f"{what} not met within {limit} s {detail}")
        await asyncio.sleep(0.05)


def idle(site: Site, peer: str) -> Callable[[], bool]:
    """True once `site` has no unanswered request to `peer` and no replication message in its
    queue (user mail it holds does not count)."""

    def replication_mail() -> list[Any]:
        return [
            e
            for e in site.service.queue.entries()
            if any(r.address.lower().startswith("sitemail-dsa@") for r in e.recipients)
        ]

    def check() -> bool:
        status = site.service.replication.status()
        waiting = any(p.waiting for p in status.peers if p.peer == peer)
        return not waiting and not replication_mail()

    def explain() -> str:
        entries = site.service.queue.entries()
        return f"(status {site.service.replication.status()}, queue {entries})"

    check.explain = explain  # type: ignore[attr-defined]
    return check


async def replicated_pair(
    org: Org, users: tuple[str, str] = ("user1", "user2")
) -> tuple[Site, Site]:
    """SiteA and SiteB with a mailbox each, connectors and connected sites both ways, running
    and replicated both ways (A knows B's user, B knows A's key and address)."""
    a, b = org.create("SiteA"), org.create("SiteB")
    for site, alias in zip((a, b), users, strict=True):
        site.service.add_recipient(ObjectKind.MAILBOX, alias, display_name=alias.title())
    for x, y in ((a, b), (b, a)):
        org.connect(x, y)
        org.link(x, y)
    await org.start(a)
    await org.start(b)
    for puller, peer in ((a, b), (b, a)):
        puller.request_now(peer.name)
        await until(idle(puller, peer.name), what=f"{puller.name} replicated from {peer.name}")
    return a, b


async def replicate(pairs: Iterable[tuple[Site, Site]], rounds: int = 1) -> None:
    """Both sides of every pair pull from each other (rounds > 1: transitive replicas)."""
    for _ in range(rounds):
        for x, y in pairs:
            for puller, peer in ((x, y), (y, x)):
                puller.request_now(peer.name)
                await until(idle(puller, peer.name), what=f"{puller.name} idle with {peer.name}")


def knows(site: Site, address: str, home: str) -> Callable[[], bool]:
    def check() -> bool:
        owner = site.service.directory.lookup(address)
        return owner is not None and owner.site == home

    return check


def mailbox(site: Site, alias: str, *extra: str) -> None:
    site.service.add_recipient(
        ObjectKind.MAILBOX, alias, display_name=alias.title(), extra_addresses=list(extra)
    )


def delivered(site: Site, alias: str, count: int = 1) -> Callable[[], bool]:
    return lambda: len(site.inbox(alias)) >= count
