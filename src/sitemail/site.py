"""The composition root: builds every component of one server and runs them in one TaskGroup.

One job: wire config, store, directory, routing, queue, transports and listeners together.
Nothing else constructs components; nothing else knows the whole picture. The queue gets its
transports here by name (it never imports delivery), and every task belongs to the TaskGroup
of `SiteServer.run`, so stopping the server stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sitemail.admin import cli
from sitemail.admin.datadir import remember_data_dir, resolve_data_dir
from sitemail.admin.snapshot import site_snapshot
from sitemail.admin.token import admin_address
from sitemail.admin.wake import open_wake_socket
from sitemail.config import ServerConfig, load_config
from sitemail.core.clock import Clock, SystemClock
from sitemail.core.errors import ConfigError
from sitemail.delivery.local import LocalDelivery
from sitemail.delivery.remote import RemoteDelivery
from sitemail.directory import Directory
from sitemail.lab.cli import register as register_lab
from sitemail.queue.manager import QueueManager
from sitemail.queue.model import DeliveryAgent
from sitemail.queue.spool import Spool
from sitemail.replication.agent import ReplicationAgent
from sitemail.replication.keys import load_site_key
from sitemail.replication.replicator import Replicator
from sitemail.replication.scheduler import ReplicationScheduler
from sitemail.routing.resolver import DnsResolver, NoDnsResolver, Resolver
from sitemail.routing.route import Transport
from sitemail.routing.router import Router
from sitemail.smtp.engine import start_smtp_server, stop_smtp_server
from sitemail.smtp.policy import ImsPolicy
from sitemail.store import Store, default_url, open_store, upgrade
from sitemail.store.writer import GroupWriter
from sitemail.web import bind_api_socket, create_app, serve_api

__all__ = ["SiteServer", "build_tls_context", "main", "run_server"]

log = logging.getLogger("sitemail.site")


def build_tls_context(config: ServerConfig) -> ssl.SSLContext:
    cert, key = config.path(config.tls.cert_file), config.path(config.tls.key_file)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from exc
    return context


@dataclass(slots=True)
class Components:
    store: Store
    directory: Directory
    router: Router
    spool: Spool
    manager: QueueManager
    writer: GroupWriter
    replicator: Replicator
    remote: RemoteDelivery


class SiteServer:
    """One `sitemail serve` process."""

    def __init__(self, config: ServerConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.components: Components | None = None
        self.smtp_ports: list[tuple[str, int]] = []
        self.api_address: tuple[str, int] | None = None  # where the admin API listens

    def build(self) -> Components:
        config = self.config
        store = open_store(config.database_url or default_url(config.data_dir))
        upgrade(store)
        directory = Directory(store, self.clock)
        org = directory.org()
        router = Router(directory, smart_host=config.smtp.smart_host)
        server_name = self.server_name(directory)
        nameservers = config.dns.servers()
        resolver: Resolver = (
            DnsResolver(nameservers, timeout=config.dns.timeout, lifetime=config.dns.timeout)
            if nameservers
            else NoDnsResolver()
        )
        remote = RemoteDelivery(
            resolver=resolver,
            source_address=config.listen[0],
            helo_name=server_name,
            port=config.smtp.outbound_port,
            local_names=frozenset({server_name}),
            local_addresses=frozenset(config.listen),
            rng=random.Random(),  # noqa: S311 - MX load spreading, not security
            site_hop=router.site_hop,
            trace_site=org.local_site,
            wall_clock=self.clock.now,
        )
        writer = GroupWriter(store)  # every queue write of the process: one commit per batch
        replicator = Replicator(
            directory, self.clock, load_site_key(config.data_dir), config.replication
        )
        wake_queue = _Later()
        agents: dict[Transport, DeliveryAgent] = {
            Transport.LOCAL: LocalDelivery(directory, self.clock, org.local_site),
            Transport.RELAY: remote,
            Transport.MX: remote,
            Transport.SITE: remote,
            Transport.REPLICATION: ReplicationAgent(
                replicator, on_enqueued=wake_queue, submit=writer.submit
            ),
        }
        manager = QueueManager(
            store,
            self.clock,
            site=org.local_site,
            reporting_mta=server_name,
            settings=config.queue,
            router=router.route,
            agents=agents,
            writer=writer,
        )
        wake_queue.target = manager.wake
        spool = Spool(store, self.clock, org.local_site, on_enqueued=manager.wake, writer=writer)
        self.components = Components(
            store, directory, router, spool, manager, writer, replicator, remote
        )
        return self.components

    def server_name(self, directory: Directory) -> str:
        """Our host name in greetings and Received headers: server.site-domain."""
        org = directory.org()
        return f"{org.local_server.lower()}.{directory.template().domain}"

    async def run(self, ready: Callable[[SiteServer], None] | None = None) -> None:
        """Serve until cancelled."""
        parts = self.components or self.build()
        tls = build_tls_context(self.config)
        policy = ImsPolicy(
            parts.directory,
            parts.router,
            parts.spool,
            self.clock,
            trusted_networks=self.config.smtp.trusted_networks,
        )
        await parts.writer.start()
        await parts.spool.start()
        servers = []
        wake: socket.socket | None = None
        try:
            for address in self.config.listen:
                server = await start_smtp_server(
                    address,
                    self.config.smtp.port,
                    policy=policy,
                    server_name=self.server_name(parts.directory),
                    limits=self.config.limits,
                    tls_context=tls,
                )
                servers.append(server)
                port = server.sockets[0].getsockname()[1]
                self.smtp_ports.append((address, port))
                parts.remote.listen_ports.add(port)
                log.info("SMTP listening on %s:%d", address, port)
            scheduler = ReplicationScheduler(
                parts.replicator,
                on_enqueued=parts.manager.wake,
                local_hosts=[*self.config.listen, self.server_name(parts.directory)],
            )
            wake = self._listen_for_wake(parts.manager.wake)
            api_socket = self._bind_api()
            if ready is not None:
                ready(self)
            async with asyncio.TaskGroup() as group:
                group.create_task(parts.manager.run(), name="queue-manager")
                group.create_task(scheduler.run(), name="replication-scheduler")
                if api_socket is not None:
                    group.create_task(self._serve_api(parts, api_socket), name="admin-api")
        finally:
            log.info("stopping: closing listeners, finishing queue writes")
            if wake is not None:
                asyncio.get_running_loop().remove_reader(wake.fileno())
                wake.close()
            for server in servers:
                stop_smtp_server(server)
            await parts.spool.stop()
            await parts.writer.stop()
            parts.store.close()

    def _bind_api(self) -> socket.socket | None:
        """The admin API's socket ([admin] listen and port; none when port = 0)."""
        host, port = admin_address(self.config)
        if not port:
            return None
        sock = bind_api_socket(host, port)
        self.api_address = sock.getsockname()[:2]
        return sock

    async def _serve_api(self, parts: Components, sock: socket.socket) -> None:
        """The admin API in this loop, over this server's store; its routes run in threads,
        so a change that queued mail wakes the queue through the loop."""
        loop = asyncio.get_running_loop()
        try:
            app = create_app(
                self.config.data_dir,
                wake=lambda: loop.call_soon_threadsafe(parts.manager.wake),
                store=parts.store,
                clock=self.clock,
            )
            await serve_api(app, sock)
        finally:
            sock.close()

    def _listen_for_wake(self, wake: Callable[[], None]) -> socket.socket | None:
        """`sitemail` commands that queue something nudge us (admin/wake.py)."""
        sock = open_wake_socket(self.config.data_dir)
        if sock is None:
            return None

        def drain() -> None:
            with contextlib.suppress(OSError):
                while sock.recv(64):
                    pass
            wake()

        asyncio.get_running_loop().add_reader(sock.fileno(), drain)
        return sock


class _Later:
    """A callable whose target is set once the object it calls exists (wiring order)."""

    def __init__(self) -> None:
        self.target: Callable[[], None] = lambda: None

    def __call__(self) -> None:
        self.target()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the `speed` extra), else asyncio's own.

    The engine runs on either (STARTTLS included); uvloop's transports spend less time per
    reply and per read. `SITEMAIL_EVENT_LOOP=asyncio` keeps asyncio's loop regardless.
    """
    if os.environ.get("SITEMAIL_EVENT_LOOP", "") == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_server(data_dir: Path) -> None:
    """`sitemail serve`: run one server in this process until SIGINT/SIGTERM."""
    config = load_config(data_dir)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every connection
    logging.getLogger("uvicorn").setLevel(logging.WARNING)  # start/stop chatter of the admin API
    server = SiteServer(config)

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            if task is not None:
                loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await server.run(lambda s: log.info("ready: %s", s.smtp_ports))

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {', '.join(config.listen)} port {config.smtp.port}: {exc.strerror}"
            " (is another server running? change [server] listen or [smtp] port)"
        ) from exc


@cli.app.command("serve")
@cli.handle_errors
def serve(data_dir: cli.DataDir = None) -> None:
    """Run the server: SMTP listeners, the queue and delivery, until Ctrl-C or SIGTERM."""
    run_server(resolve_data_dir(data_dir))


register_lab(cli.lab_app, cli.handle_errors, site_snapshot, remember_data_dir)


def main() -> None:
    """Console-script entry point: the admin CLI plus `serve` and `lab`."""
    cli.app()
