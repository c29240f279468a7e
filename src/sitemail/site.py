"""The composition root: builds every component of one server and runs them in one TaskGroup.

One job: wire config, store, directory, routing, queue, transports and listeners together.
Nothing else constructs components; nothing else knows the whole picture. The queue gets its
transports here by name (it never imports delivery), and every task belongs to the TaskGroup
of `SiteServer.run`, so stopping the server stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import random
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TypeVar

from sitemail.admin.filemodes import DB_FILE, create_private
from sitemail.admin.filemodes import problems as mode_problems
from sitemail.admin.privileges import become_service_user, drop_capabilities
from sitemail.admin.systemd import journal_handler, notify
from sitemail.admin.token import admin_address, check_admin_exposure
from sitemail.admin.wake import open_wake_socket, serve_control
from sitemail.config import ServerConfig, load_config
from sitemail.core.clock import Clock, SystemClock
from sitemail.core.errors import ConfigError
from sitemail.core.events import LogFormatter, listening
from sitemail.core.tls import ReloadingContext
from sitemail.delivery.local import LocalDelivery
from sitemail.delivery.remote import RemoteDelivery
from sitemail.directory import Directory
from sitemail.directory.auth import Authenticator
from sitemail.frontends import WorkerPool
from sitemail.mailauth.edge import edge_check_for
from sitemail.mailauth.signing import signer_for
from sitemail.queue.journal import DeliveryJournal
from sitemail.queue.manager import QueueManager
from sitemail.queue.model import DeliveryAgent
from sitemail.queue.spool import Spool
from sitemail.replication.agent import ReplicationAgent
from sitemail.replication.freshness import freshness_reader
from sitemail.replication.keys import load_site_key
from sitemail.replication.replicator import Replicator
from sitemail.replication.scheduler import ReplicationScheduler
from sitemail.replication.siblings import SiblingOrigins
from sitemail.routing.resolver import DnsResolver, NoDnsResolver, Resolver
from sitemail.routing.route import Transport
from sitemail.routing.router import Router
from sitemail.smtp.engine import drain_smtp_server, start_smtp_server, stop_smtp_server
from sitemail.smtp.policy import ImsPolicy
from sitemail.smtp.submission import SubmissionPolicy
from sitemail.store import Store, default_url, open_store, upgrade
from sitemail.store.space import FreeSpace
from sitemail.store.writer import GroupWriter
from sitemail.web import Metrics, bind_api_socket, create_app, serve_api

__all__ = ["SPOOL_DIR", "SiteServer", "build_tls_context", "clear_spool_dir", "run_server"]

log = logging.getLogger("sitemail.site")
SPOOL_DIR = "incoming"  # in the data dir: messages arriving, spooled beyond a size
T = TypeVar("T")


def build_tls_context(config: ServerConfig) -> ssl.SSLContext:
    """Every listener's TLS (core/tls.py): AEAD suites only, the certificate reloaded when
    `sitemail tls set` replaces its files."""
    return _certificates(config).context


def _certificates(config: ServerConfig) -> ReloadingContext:
    cert, key = config.path(config.tls.cert_file), config.path(config.tls.key_file)
    return ReloadingContext(cert, key)


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
        # Client-access listeners by kind ("imap", "imaps", "pop3", "pop3s", "submission",
        # "submissions"): (address, bound port) pairs.
        self.client_ports: dict[str, list[tuple[str, int]]] = {}
        self.api_address: tuple[str, int] | None = None  # where the admin API listens
        self._stop_requested = asyncio.Event()
        self.workers: dict[str, WorkerPool] = {}  # the IMAP and POP3 worker supervisors
        self.certificates: ReloadingContext | None = None  # every listener's, once running
        self.metrics = Metrics()  # /metrics on the admin port (web/metrics.py)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM): `run` returns within `[server] shutdown_timeout`."""
        self._stop_requested.set()

    def reload(self) -> None:
        """SIGHUP (`systemctl reload`): the TLS certificate read again at once, here and in
        the workers; sitemail.toml read again: [queue] applies at once (min_free at restart), a change to any
        other table is logged as waiting for a restart (docs/deploy.md, Reload)."""
        if self.certificates is not None:
            self.certificates.refresh(force=True)
        for pool in self.workers.values():
            pool.signal(signal.SIGHUP)
        try:
            fresh = load_config(self.config.data_dir)
        except ConfigError as exc:
            log.warning("reload: %s (the running configuration stays)", exc.message)
            return
        if fresh.queue != self.config.queue and self.components is not None:
            self.components.manager.use_settings(fresh.queue)
            self.config = replace(self.config, queue=fresh.queue)
            log.info("reload: [queue] applied")
        changed = [
            f.name for f in fields(fresh) if getattr(fresh, f.name) != getattr(self.config, f.name)
        ]
        if changed:
            log.warning(
                "reload: sitemail.toml changed (%s): read at start only, it takes effect "
                "at the next restart",
                ", ".join(changed),
            )
        log.info("reloaded: TLS certificate checked, mailboxes and routes are always live")

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    def build(self) -> Components:
        config = self.config
        if not config.database_url:
            create_private(config.data_dir / DB_FILE)  # a database made here is 0600
        for problem in mode_problems(config):
            log.warning("%s; fix: %s", problem.message, problem.fix)
        store = open_store(config.database_url or default_url(config.data_dir))
        upgrade(store)
        directory = Directory(store, self.clock)
        org = directory.org()
        router = Router(
            directory,
            smart_host=config.smtp.smart_host,
            freshness=freshness_reader(store),
            unknown_window=config.replication.unknown_recipient_window,
            loop_hold=config.queue.retry_initial,
            clock=self.clock.now,
        )
        server_name = self.server_name(directory)
        nameservers = config.dns.servers()
        resolver: Resolver = (
            DnsResolver(nameservers, timeout=config.dns.timeout, lifetime=config.dns.timeout)
            if nameservers
            else NoDnsResolver()
        )
        site_key = load_site_key(config.data_dir)
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
            trace_signer=site_key.sign,  # the next site can prove a resend (queue.dedupe)
            dkim_signer=signer_for(config.mailauth, config.data_dir, router.is_authoritative),
            wall_clock=self.clock.now,
        )
        writer = GroupWriter(store)  # every queue write of the process: one commit per batch
        replicator = Replicator(directory, self.clock, site_key, config.replication)
        wake_queue = _Later()
        replication = ReplicationAgent(replicator, on_enqueued=wake_queue, submit=writer.submit)
        agents: dict[Transport, DeliveryAgent] = {
            Transport.LOCAL: LocalDelivery(directory, self.clock, org.local_site),
            Transport.RELAY: remote,
            Transport.MX: remote,
            Transport.SITE: remote,
            Transport.REPLICATION: replication,
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
            # A next hop's 250 is noted at once: a crash does not send that message again.
            journal=DeliveryJournal(config.data_dir / "queue-journal"),
            server=config.server,  # its claims on the queue the site's servers share
        )
        wake_queue.target = manager.wake
        replication.handoff = manager  # what it queues starts at once, as the spool's mail
        # The spool hands committed mail straight to the manager (a faster wake-up).
        spool = Spool(
            store,
            self.clock,
            org.local_site,
            on_enqueued=manager.wake,
            writer=writer,
            handoff=manager,
            dedupe_retention=2 * config.queue.expiry,  # past any retry of a sibling site
        )
        self.components = Components(
            store, directory, router, spool, manager, writer, replicator, remote
        )
        return self.components

    @property
    def spool_dir(self) -> Path:
        """Where messages too big for memory are spooled while DATA arrives."""
        return self.config.data_dir / SPOOL_DIR

    def server_name(self, directory: Directory) -> str:
        """Our host name in greetings and Received headers: server.site-domain, on the site's
        own (routing) domain, which stays when Site Addressing moves to the shared domain (the
        article's A records are serverX.siteX.company.com)."""
        # This process's own server (config), not the one that made the site: a site may
        # have several servers on one database (sitemail server add).
        return f"{self.config.server.lower()}.{directory.routing_domain()}"

    async def run(self, ready: Callable[[SiteServer], None] | None = None) -> None:
        """Serve until `stop()` or cancelled. Either way the stop runs in this order (see
        `_stop_serving`): listeners closed, sessions storing a message answered, queue
        deliveries in flight finished and recorded, every queued write committed. Every
        event emitted in here (each task started here inherits the context) is counted in
        this server's metrics, and in no other's."""
        with listening(self.metrics.observe):
            await self._run(ready)

    async def _run(self, ready: Callable[[SiteServer], None] | None) -> None:
        check_admin_exposure(self.config)  # before anything listens: one clear error
        parts = self.components or self.build()
        self.certificates = _certificates(self.config)
        tls = self.certificates.context
        policy = ImsPolicy(
            parts.directory,
            parts.router,
            parts.spool,
            self.clock,
            trusted_networks=self.config.smtp.trusted_networks,
            origin_of=SiblingOrigins(parts.replicator).origin,
            edge_check=edge_check_for(
                self.config, parts.directory.org().name, parts.router.is_authoritative
            ),
        )
        clear_spool_dir(self.spool_dir)
        await parts.writer.start()
        await parts.spool.start()
        space = self.free_space()
        servers: list[asyncio.Server] = []
        wake: socket.socket | None = None
        access = _ClientAccess(self, parts, tls, policy, space)
        deadline = _Deadline(self.config.shutdown_timeout)
        try:
            await self._listen_smtp(servers, parts, policy, tls, space)
            for address in self.config.listen:
                await access.start(address)
            await access.launch()
            scheduler = ReplicationScheduler(
                parts.replicator,
                on_enqueued=parts.manager.wake,
                local_hosts=[*self.config.listen, self.server_name(parts.directory)],
            )
            wake = self._listen_for_wake(parts.manager)
            api_socket = self._bind_api()
            if ready is not None:
                ready(self)
            async with asyncio.TaskGroup() as group:
                queue = group.create_task(parts.manager.run(), name="queue-manager")
                others = [group.create_task(scheduler.run(), name="replication-scheduler")]
                if api_socket is not None:
                    api_tls = tls if self.config.admin.tls else None
                    others.append(
                        group.create_task(
                            self._serve_api(parts, api_socket, api_tls), name="admin-api"
                        )
                    )
                await self._stop_requested.wait()
                deadline.start()
                log.info(
                    "stopping: closing listeners, finishing deliveries in flight (at most %g s)",
                    self.config.shutdown_timeout,
                )
                parts.manager.stop()
                await self._stop_serving(servers, access, deadline)
                await _finish(queue, deadline.left(reserve=True), "queue deliveries")
                for task in others:
                    task.cancel()
        finally:
            if wake is not None:
                asyncio.get_running_loop().remove_reader(wake.fileno())
                wake.close()
            deadline.start()  # cancelled: the same steps, each bounded
            await self._stop_serving(servers, access, deadline)
            await parts.spool.stop(within=deadline.left())
            await parts.writer.stop(within=max(deadline.left(), _FLUSH_MIN))
            parts.store.close()
            log.info("stopped")

    async def _listen_smtp(
        self,
        servers: list[asyncio.Server],
        parts: Components,
        policy: ImsPolicy,
        tls: ssl.SSLContext,
        space: FreeSpace,
    ) -> None:
        """Start the SMTP listener of each listen address, adding each to `servers` as it
        starts (a later one that cannot bind leaves the earlier ones there to be stopped)."""
        for address in self.config.listen:
            server = await _bind(
                "[smtp] port",
                address,
                self.config.smtp.port,
                start_smtp_server(
                    address,
                    self.config.smtp.port,
                    policy=policy,
                    server_name=self.server_name(parts.directory),
                    limits=self.config.limits,
                    tls_context=tls,
                    spool_dir=self.spool_dir,
                    space=space,
                ),
            )
            servers.append(server)
            port = server.sockets[0].getsockname()[1]
            self.smtp_ports.append((address, port))
            parts.remote.listen_ports.add(port)
            log.info("SMTP listening on %s:%d", address, port)

    async def _stop_serving(
        self, servers: list[asyncio.Server], access: _ClientAccess, deadline: _Deadline
    ) -> None:
        """Close every listener and session; a session storing a message gets its reply out
        first (up to the deadline). Idempotent."""
        everything = [*servers, *access.smtp_servers]
        for server in everything:
            stop_smtp_server(server)
        cut = 0
        for server in everything:
            cut += await drain_smtp_server(server, deadline.left(reserve=True))
        if cut:
            log.warning("stopped %d SMTP session(s) while storing a message: no reply sent", cut)
        await access.stop()

    def free_space(self) -> FreeSpace:
        """The data dir's free space above `[queue] min_free`, which MAIL checks."""
        reserve = self.config.queue.reserve(self.config.limits.message_size)
        return FreeSpace(self.config.data_dir, reserve)

    def _bind_api(self) -> socket.socket | None:
        """The admin API's socket ([admin] listen and port; none when port = 0)."""
        host, port = admin_address(self.config)
        if not port:
            return None
        sock = bind_api_socket(host, port)
        self.api_address = sock.getsockname()[:2]
        return sock

    async def _serve_api(
        self, parts: Components, sock: socket.socket, tls: ssl.SSLContext | None
    ) -> None:
        """The admin API in this loop, over this server's store; its routes run in threads,
        so a change that queued mail wakes the queue through the loop."""
        loop = asyncio.get_running_loop()
        try:
            app = create_app(
                self.config.data_dir,
                wake=lambda: loop.call_soon_threadsafe(parts.manager.wake),
                store=parts.store,
                clock=self.clock,
                attempts=parts.manager.attempts.snapshot,
                metrics=self.metrics,
            )
            await serve_api(app, sock, tls)
        finally:
            sock.close()

    def _listen_for_wake(self, manager: QueueManager) -> socket.socket | None:
        """`sitemail` commands that queue something nudge us, and `queue list` asks what
        the deliveries in flight are doing (admin/wake.py)."""
        sock = open_wake_socket(self.config.data_dir)
        if sock is None:
            return None
        asyncio.get_running_loop().add_reader(
            sock.fileno(), serve_control, sock, manager.wake, manager.attempts.snapshot
        )
        return sock


def clear_spool_dir(path: Path) -> None:
    """Empty the DATA spool directory at start: what a crash left there (spool files have no
    name where the system offers O_TMPFILE; elsewhere one may remain) was never accepted."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for leftover in path.iterdir():
        with contextlib.suppress(OSError):
            leftover.unlink()
            log.warning("removed %s, a partial message left by a crash", leftover.name)


async def _bind(setting: str, address: str, port: int, start: Awaitable[T]) -> T:
    """Start one listener; a port that cannot be bound is a configuration error naming it."""
    try:
        return await start
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {address} port {port}: {exc.strerror} (is another server "
            f"running? change [server] listen or {setting}; 0 switches that listener off)"
        ) from exc


class _ClientAccess:
    """IMAP, POP3 and submission listeners, sharing one Authenticator (one lock-out table)."""

    def __init__(
        self,
        site: SiteServer,
        parts: Components,
        tls: ssl.SSLContext,
        inbound: ImsPolicy,
        space: FreeSpace,
    ) -> None:
        config = site.config
        self._space = space
        self._site = site
        self._config = config
        self._tls = tls
        self._server_name = site.server_name(parts.directory)
        self.authenticator = Authenticator(parts.directory, site.clock, config.auth)
        self._submission = SubmissionPolicy(inbound, parts.directory)
        self._smtp_servers: list[asyncio.Server] = []
        # IMAP and POP3 run in supervised worker processes (sitemail.frontends, issue 18)
        auth = self.authenticator
        self.imap = WorkerPool("imap", config, self._server_name, authenticator=auth)
        self.pop3 = WorkerPool("pop3", config, self._server_name, authenticator=auth)
        site.workers = {"imap": self.imap, "pop3": self.pop3}

    async def start(self, address: str) -> None:
        """Every configured client-access listener on `address`."""
        config = self._config
        listeners: tuple[tuple[str, str, int, Callable[[str, int, bool], Awaitable[int]]], ...] = (
            ("submission", "[submission] port", config.submission.port, self._submission_on),
            (
                "submissions",
                "[submission] tls_port",
                config.submission.tls_port,
                self._submission_on,
            ),
            ("imap", "[imap] port", config.imap.port, self._imap_on),
            ("imaps", "[imap] tls_port", config.imap.tls_port, self._imap_on),
            ("pop3", "[pop3] port", config.pop3.port, self._pop3_on),
            ("pop3s", "[pop3] tls_port", config.pop3.tls_port, self._pop3_on),
        )
        for kind, setting, port, start in listeners:
            if port:  # 0: switched off
                implicit = setting.endswith("tls_port")
                bound = await _bind(setting, address, port, start(address, port, implicit))
                self._site.client_ports.setdefault(kind, []).append((address, bound))
                log.info("%s listening on %s:%d", kind, address, bound)

    async def _submission_on(self, address: str, port: int, implicit: bool) -> int:
        server = await start_smtp_server(
            address,
            port,
            policy=self._submission,
            server_name=self._server_name,
            limits=self._config.limits,
            tls_context=self._tls,
            authenticator=self.authenticator,
            auth_required=True,
            implicit_tls=implicit,
            spool_dir=self._site.spool_dir,
            space=self._space,
        )
        self._smtp_servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _imap_on(self, address: str, port: int, implicit: bool) -> int:
        return self.imap.bind(address, port, implicit_tls=implicit)

    async def _pop3_on(self, address: str, port: int, implicit: bool) -> int:
        return self.pop3.bind(address, port, implicit_tls=implicit)

    async def launch(self) -> None:
        """Start the IMAP and POP3 workers, once every listener is bound."""
        await asyncio.gather(self.imap.launch(), self.pop3.launch())

    @property
    def smtp_servers(self) -> list[asyncio.Server]:
        """The submission listeners (the site stops them with its own)."""
        return list(self._smtp_servers)

    async def stop(self) -> None:
        """Stop IMAP and POP3 (submission: `smtp_servers`). Idempotent."""
        await self.imap.stop()
        await self.pop3.stop()
        self.authenticator.close()


# Of the shutdown timeout, what is kept for the last commit of queued writes: deliveries and
# sessions still busy past the rest are cut off, so that what is known gets recorded.
_FLUSH_SHARE = 0.2
_FLUSH_MIN = 2.0  # seconds the last commit gets even when the deadline is past


class _Deadline:
    """The shutdown timeout, counted from the stop request."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._end: float | None = None

    def start(self) -> None:
        if self._end is None:
            self._end = asyncio.get_running_loop().time() + self._timeout

    def left(self, *, reserve: bool = False) -> float:
        """Seconds until the deadline (less the flush's share with `reserve`), at least 0."""
        assert self._end is not None
        end = self._end - (self._timeout * _FLUSH_SHARE if reserve else 0.0)
        return max(0.0, end - asyncio.get_running_loop().time())


async def _finish(task: asyncio.Task[None], within: float, what: str) -> None:
    """Wait up to `within` seconds for `task` to end by itself, then cancel it."""
    done, _ = await asyncio.wait([task], timeout=within)
    if not done:
        log.warning("stopping: %s still running after the shutdown timeout: cut off", what)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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


# The cyclic collector's first threshold (objects allocated, net of those freed) in a running
# server; CPython's default is 700. See `_settle_garbage_collector`.
_GC_THRESHOLD = 50_000


def _settle_garbage_collector() -> None:
    """Once the server is up: freeze what start-up made, and collect young objects less often.

    Measured in a full pull of 100,000 objects (bench/replication.py, with gc.callbacks
    timing each collection): each server spent about half a second in the cyclic collector,
    most of it in four full collections of 90 ms each that walked the hundreds of thousands
    of objects made at start-up (modules, SQLAlchemy's tables and compiled statements),
    while holding the GIL, so mail and replication stood still meanwhile. Frozen, they are
    never walked again (the CPython documentation's advice for long-running servers). Our
    objects are freed by reference counting: a collection finds little, so it runs once per
    50,000 surviving allocations, not 700 (an answer of 512 objects makes a few thousand)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(_GC_THRESHOLD, older, oldest)


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
_MMAP_THRESHOLD = 128 * 1024


def _return_big_blocks_to_the_system() -> None:
    """glibc only: blocks of 128 KiB or more (the chunks big messages move in) are mapped
    and unmapped each time, never kept in a heap that only grows. By default glibc raises
    this threshold to the size of every big block freed, so after the first chunks they came
    from the thread's heap and stayed there: bench/bigmessages.py measured 20 MB less peak
    RSS with the threshold fixed (16 concurrent messages of 20 MB, relayed)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def run_server(data_dir: Path, *, allow_root: bool = False) -> None:
    """`sitemail serve`: run one server in this process until SIGINT/SIGTERM; started as
    root, as `[server] user` (admin/privileges.py)."""
    os.umask(0o077)  # whatever the server creates (token, certificate, spool) is its own
    config = load_config(data_dir)
    _return_big_blocks_to_the_system()
    journal = journal_handler()  # under systemd: the journal's levels, its own time stamps
    handler: logging.Handler
    if journal is not None and config.log.format != "json":
        handler = journal
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(LogFormatter(as_json=config.log.format == "json"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    log.info("running as %s", become_service_user(config, allow_root=allow_root))
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every connection
    logging.getLogger("uvicorn").setLevel(logging.WARNING)  # start/stop chatter of the admin API
    server = SiteServer(config)

    def ready(running: SiteServer) -> None:
        drop_capabilities()  # every port is bound: CAP_NET_BIND_SERVICE is not needed again
        log.info("ready: %s %s", running.smtp_ports, running.client_ports)
        notify(f"READY=1\nSTATUS=serving {running.smtp_ports}\nMAINPID={os.getpid()}")
        _settle_garbage_collector()

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            """The first signal stops gracefully, a second one (or the timeout) at once."""
            assert task is not None
            if server.stopping:
                task.cancel()
                return
            notify("STOPPING=1")
            server.stop()
            loop.call_later(config.shutdown_timeout + _FLUSH_MIN, task.cancel)

        def on_reload() -> None:
            notify("RELOADING=1")
            server.reload()
            notify("READY=1")

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        loop.add_signal_handler(signal.SIGHUP, on_reload)
        with contextlib.suppress(asyncio.CancelledError):
            await server.run(ready)

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {', '.join(config.listen)}: {exc.strerror} (is another server "
            "running? change [server] listen or the ports in [smtp], [imap], [pop3], "
            "[submission])"
        ) from exc
