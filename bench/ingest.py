"""Benchmark: messages per second accepted durably, and delivered into mailboxes, by sitemail
and by Postfix, side by side on this machine (issue 3).

Both servers run privately on loopback for the whole benchmark: Debian's Postfix (its own
durable queue in a temporary directory) on one address, `sitemail serve` (a fresh data dir:
SQLite with WAL and synchronous=FULL) on another, the same port. Postfix's own load generator
`smtp-source` drives each in turn, with the same messages (4 KiB bodies by default), at each
concurrency (10 and 50 by default), alternating servers so both see the same machine load.

Two modes, each with fresh instances of both servers:

* accept: how fast each server answers "250" after DATA, i.e. accepts a message durably
  (fsynced). Postfix hands every message to its `discard` transport. sitemail has no discard
  transport, so its queue delivers every accepted message into the bench mailbox *while*
  accepting (delivery is not held back): sitemail does strictly more work here than Postfix,
  so its figure is conservative. The time is smtp-source's run, from connect to the last QUIT;
  each run then waits until the server's queue is empty before the next one starts.
* mailbox: from the start of the smtp-source run until the last message is in a mailbox:
  sitemail's mailbox store (committed together with the dequeue) vs Postfix's virtual(8)
  delivering into a Maildir.

Shapes (issue 24): by default every session sends message after message over one connection,
each to the one recipient bench@. `--new-connection` opens a connection per message (as most
Internet senders do); `--recipients N` gives every message N recipients, each address different
from every other in the run (smtp-source -N: 1bench@, 2bench@, ...; sitemail gets a mailbox
for each, Postfix a catch-all). `--all-shapes` runs the four: reused or new connection x one
recipient or N different ones. Each concurrency's timed run is preceded by a warm-up at that
concurrency, the server that runs first alternates, and the ratio of every round is printed
before the medians.

After the rate runs, an asyncio client (`_postfix.measure_latency`) times each message's
acceptance, from the end of DATA to the 250, at each concurrency, and p50/p99 are printed.

The targets of issue 3: accepting, at least 1.3x Postfix at concurrency 50; into mailboxes, at
least 1.5x Postfix. The table says which rows meet them.

With `--edge`, both servers check every message as an Internet edge does (issue 20): sitemail
with its SPF, DKIM and DMARC checks ([mailauth]), Postfix with OpenDKIM and OpenDMARC as
milters (bench/_milters.py); both resolve through a DNS server on loopback serving the
sender domain's SPF and DMARC records. The target then: sitemail still ahead of Postfix.

Bounded: a fixed number of messages per run, every wait has a timeout, and both servers are
stopped (and their files removed) on the way out, also after an error or Ctrl-C. Loopback only.
Run as root (Postfix) from the repository root:

    .venv/bin/python bench/ingest.py                       # 5,000 x 4 KiB at c=10 and c=50
    .venv/bin/python bench/ingest.py --messages 2000 --modes accept --json
    .venv/bin/python bench/ingest.py --all-shapes --recipients 1 --size 1024
    .venv/bin/python bench/ingest.py --edge --modes accept     # both checking SPF/DKIM/DMARC
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from _milters import milters, milters_available
from _pgsites import pg_sitemail, split_source
from _postfix import (
    LatencyResult,
    Mode,
    PostfixError,
    PrivatePostfix,
    SourceResult,
    _port_answers,
    ensure_postfix_installed,
    measure_latency,
    run_smtp_source,
)
from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind
from sitemail.lab.dns_server import EmbeddedDnsServer

DOMAIN = "bench.test"
SENDER = "loadgen@sender.test"
RECIPIENT = f"bench@{DOMAIN}"
WARMUP_MESSAGES = 200
ACCEPT_TARGET = 1.3  # x Postfix, at every concurrency and in every shape (issue 24)
MAILBOX_TARGET = 1.5  # x Postfix
EDGE_TARGET = 1.0  # x Postfix with its milters, both checking every message (--edge)

Row = dict[str, float]


class BenchError(RuntimeError):
    """A server did not start, stop or finish its work in time."""


def _wait_until(
    done: Callable[[], bool], *, timeout: float, what: str, poll: float = 0.02
) -> float:
    start = time.perf_counter()
    while not done():
        if time.perf_counter() - start > timeout:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)
    return time.perf_counter() - start


class Server(Protocol):
    name: str
    ip: str
    port: int

    def pending(self) -> int:
        """Messages still in the queue."""
        ...

    def delivered(self) -> int:
        """Messages in mailboxes."""
        ...

    def clear_mailboxes(self) -> None: ...


# --------------------------------------------------------------------------------------------
# Postfix


class PostfixServer:
    """A `PrivatePostfix` seen through the `Server` protocol."""

    name = "Postfix"

    def __init__(self, pf: PrivatePostfix) -> None:
        self.pf = pf
        self.ip = pf.ip
        self.port = pf.port

    def pending(self) -> int:
        return self.pf.queue_size()

    def delivered(self) -> int:
        return self.pf.delivered_count()

    def clear_mailboxes(self) -> None:
        self.pf.clear_mailboxes()


@contextlib.contextmanager
def postfix_server(
    ip: str, port: int, mode: Mode, extra: dict[str, str] | None = None
) -> Iterator[PostfixServer]:
    with PrivatePostfix(ip=ip, port=port, mode=mode, domain=DOMAIN, extra_main_cf=extra) as pf:
        yield PostfixServer(pf)


# --------------------------------------------------------------------------------------------
# sitemail


def sitemail_command() -> list[str]:
    """`sitemail` of this interpreter's environment (the repository's .venv)."""
    script = Path(sys.executable).parent / "sitemail"
    if script.is_file():
        return [str(script)]
    found = shutil.which("sitemail")
    if found is None:
        raise BenchError("the sitemail command is not installed (run `make venv`)")
    return [found]


def _configure(data_dir: Path, port: int, max_connections: int, nameserver: str = "") -> None:
    """The bench's settings, through the config file: port, and room for every session.

    The default of 20 sessions per client (Postfix's 50, Exchange's 20) would refuse
    smtp-source's 50 sessions from one address; this raises it for the bench only.
    """
    path = data_dir / "sitemail.toml"
    text = path.read_text(encoding="utf-8")
    if "\n[smtp]\n" not in text or "\n[limits]\n" not in text:
        raise BenchError(f"{path} has no [smtp] or [limits] table to extend")
    text = text.replace("\n[smtp]\n", f"\n[smtp]\nport = {port}\n", 1)
    text = text.replace(
        "\n[limits]\n",
        f"\n[limits]\nconnections_per_client = {max_connections}\n"
        f"connections_total = {max_connections}\n",
        1,
    )
    if nameserver:  # --edge: [mailauth] checks need DNS (without it they are off)
        text = text.replace("\n[dns]\n", f'\n[dns]\nnameservers = ["{nameserver}"]\n', 1)
    path.write_text(text, encoding="utf-8")


class SitemailServer:
    """`sitemail serve` in a subprocess, on a fresh data dir with one mailbox (bench@)."""

    name = "sitemail"

    def __init__(
        self,
        ip: str,
        port: int,
        root: Path,
        *,
        max_connections: int,
        numbered: int = 0,
        nameserver: str = "",
    ) -> None:
        self.nameserver = nameserver
        self.ip = ip
        self.port = port
        self.data_dir = root / "data"
        self.log_path = root / "serve.log"
        self._max_connections = max_connections
        self._numbered = numbered  # mailboxes 1bench .. {numbered}bench (smtp-source -N)
        self._proc: subprocess.Popen[bytes] | None = None
        self._db: sqlite3.Connection | None = None

    def start(self, timeout: float = 60.0) -> None:
        service = AdminService.init(
            self.data_dir,
            org="BenchORG",
            site="Bench",
            server="Bench1",
            domain=DOMAIN,
            listen=[self.ip],
        )
        try:
            service.add_recipient(ObjectKind.MAILBOX, "bench", display_name="Bench")
            for number in range(1, self._numbered + 1):
                service.add_recipient(
                    ObjectKind.MAILBOX, f"{number}bench", display_name=f"Bench {number}"
                )
        finally:
            service.close()
        _configure(self.data_dir, self.port, self._max_connections, self.nameserver)
        if _port_answers(self.ip, self.port):
            raise BenchError(f"something already listens on {self.ip}:{self.port}")
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [*sitemail_command(), "serve", "--allow-root", "--data-dir", str(self.data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = self._proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise BenchError(f"sitemail serve exited {proc.returncode}:\n{self.log_tail()}")
            return _port_answers(self.ip, self.port, expect_banner=True)

        _wait_until(ready, timeout=timeout, what="sitemail's SMTP greeting", poll=0.1)
        self._db = sqlite3.connect(self.data_dir / "sitemail.db", timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-max_chars:]
        except OSError:
            return ""

    def _count(self, table: str) -> int:
        if self._db is None:
            raise BenchError("sitemail is not running")
        if self._proc is not None and self._proc.poll() is not None:
            raise BenchError(f"sitemail serve exited {self._proc.returncode}:\n{self.log_tail()}")
        # fetchall() ends the statement, so no read snapshot stays open (it would pin the WAL).
        rows = self._db.execute(f"SELECT count(*) FROM {table}").fetchall()
        return int(rows[0][0])

    def pending(self) -> int:
        return self._count("queue_message")

    def delivered(self) -> int:
        return self._count("mail_message")

    def clear_mailboxes(self) -> None:
        if self._db is not None:
            with self._db:
                self._db.execute("DELETE FROM mail_message")


@contextlib.contextmanager
def sitemail_server(
    ip: str, port: int, *, max_connections: int, numbered: int = 0, nameserver: str = ""
) -> Iterator[SitemailServer]:
    root = Path(tempfile.mkdtemp(prefix=f"sitemail-bench-{port}-"))
    server = SitemailServer(
        ip, port, root, max_connections=max_connections, numbered=numbered, nameserver=nameserver
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# runs


@dataclass(frozen=True)
class Shape:
    """How the load looks: connection reuse, and recipients per message (distinct or one)."""

    reuse: bool = True
    recipients: int = 1
    distinct: bool = False  # every RCPT of the run names another address (smtp-source -N)

    @property
    def name(self) -> str:
        connection = "reused" if self.reuse else "new-conn"
        who = f"{self.recipients}x-distinct" if self.distinct else "same-rcpt"
        return f"{connection}/{who}"


@dataclass(frozen=True)
class Settings:
    messages: int
    latency_messages: int
    size: int
    concurrency: list[int]
    timeout: float
    shape: Shape = Shape()

    @property
    def deliveries(self) -> int:
        """Mailbox deliveries one timed run makes (one per recipient)."""
        return self.messages * self.shape.recipients


def source(server: Server, settings: Settings, concurrency: int, messages: int) -> SourceResult:
    ips: list[str] = getattr(server, "ips", [server.ip])
    if len(ips) > 1:  # a site of several servers: the load shared between them, at once
        return split_source(
            ips, lambda ip, c, n: _source_at(ip, server.port, settings, c, n), concurrency, messages
        )
    return _source_at(server.ip, server.port, settings, concurrency, messages)


def _source_at(
    ip: str, port: int, settings: Settings, concurrency: int, messages: int
) -> SourceResult:
    return run_smtp_source(
        ip,
        port,
        messages=messages,
        concurrency=concurrency,
        size_bytes=settings.size,
        recipient=RECIPIENT,
        sender=SENDER,
        reuse_connections=settings.shape.reuse,
        recipients=settings.shape.recipients,
        distinct_recipients=settings.shape.distinct,
        timeout=settings.timeout,
    )


def wait_idle(server: Server, settings: Settings) -> float:
    """Until the queue has been empty on two looks in a row; the seconds waited."""
    seen = [False]

    def empty_twice() -> bool:
        empty = server.pending() == 0
        twice, seen[0] = empty and seen[0], empty
        return twice

    return _wait_until(empty_twice, timeout=settings.timeout, what=f"{server.name}'s queue")


def warm_up(server: Server, settings: Settings, concurrency: int) -> None:
    """A short run at the concurrency about to be measured, so both servers have their
    processes and caches for it before the clock starts (Postfix forks smtpd per session)."""
    source(server, settings, concurrency, max(WARMUP_MESSAGES, concurrency * 4))
    wait_idle(server, settings)
    server.clear_mailboxes()


def accept_run(server: Server, settings: Settings, concurrency: int) -> Row:
    res = source(server, settings, concurrency, settings.messages)
    drain = wait_idle(server, settings)
    server.clear_mailboxes()
    print(
        f"  accept  {server.name:<8} c={concurrency:<3} {res.messages} x {res.size_bytes} B in "
        f"{res.elapsed_s:6.2f} s = {res.msgs_per_s:6.0f} msg/s; queue empty {drain:.2f} s later",
        flush=True,
    )
    return {"msgs_per_s": res.msgs_per_s, "elapsed_s": res.elapsed_s, "drain_s": drain}


def mailbox_run(server: Server, settings: Settings, concurrency: int) -> Row:
    before = server.delivered()
    target = before + settings.deliveries
    start = time.perf_counter()
    res = source(server, settings, concurrency, settings.messages)
    _wait_until(
        lambda: server.delivered() >= target,
        timeout=settings.timeout,
        what=f"{settings.deliveries} deliveries in {server.name}'s mailboxes",
    )
    total = time.perf_counter() - start
    wait_idle(server, settings)
    server.clear_mailboxes()
    rate = settings.messages / total  # messages (not deliveries) per second, as accept
    print(
        f"  mailbox {server.name:<8} c={concurrency:<3} {res.messages} x {res.size_bytes} B "
        f"accepted in {res.elapsed_s:6.2f} s, all in mailboxes after {total:6.2f} s "
        f"= {rate:6.0f} msg/s",
        flush=True,
    )
    return {"msgs_per_s": rate, "accepted_per_s": res.msgs_per_s, "elapsed_s": total}


def latency_run(server: Server, settings: Settings, concurrency: int, mode: str) -> Row:
    lat: LatencyResult = measure_latency(
        server.ip,
        server.port,
        messages=settings.latency_messages,
        concurrency=concurrency,
        size_bytes=settings.size,
        recipient=RECIPIENT,
        sender=SENDER,
        total_timeout=settings.timeout,
    )
    if mode == "mailbox":
        target = lat.messages
        _wait_until(
            lambda: server.delivered() >= target,
            timeout=settings.timeout,
            what=f"{server.name}'s latency messages in mailboxes",
        )
    wait_idle(server, settings)
    server.clear_mailboxes()
    print(
        f"  latency {server.name:<8} c={concurrency:<3} {lat.messages} x {lat.size_bytes} B: "
        f"p50 {lat.p50_ms:6.2f} ms  p99 {lat.p99_ms:6.2f} ms  ({lat.errors} errors)",
        flush=True,
    )
    if lat.errors:
        raise BenchError(f"{server.name} refused or lost {lat.errors} latency messages")
    return {"p50_ms": lat.p50_ms, "p99_ms": lat.p99_ms, "latency_msgs_per_s": lat.msgs_per_s}


@contextlib.contextmanager
def edge(args: argparse.Namespace) -> Iterator[tuple[dict[str, str], str]]:
    """--edge: the DNS server (port 53: the milters' resolvers know no other) serving the
    sender domain's SPF (every loopback address) and DMARC (p=none: every message goes on),
    and the milters; yields Postfix's extra main.cf and sitemail's name server."""
    if not milters_available():
        raise BenchError("--edge needs root and Debian's opendkim and opendmarc")
    sender_domain = SENDER.rpartition("@")[2]
    root = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    try:
        with EmbeddedDnsServer(args.dns_ip, 53, zones=[sender_domain, DOMAIN]) as dns:
            dns.add(sender_domain, "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
            dns.add(f"_dmarc.{sender_domain}", "TXT", '"v=DMARC1; p=none"')
            with milters(
                root,
                dkim_address=args.milter_ips[0],
                dmarc_address=args.milter_ips[1],
                dns_address=args.dns_ip,
                authserv_id="postfix-bench.localhost",
            ) as smtpd_milters:
                extra = {"smtpd_milters": smtpd_milters, "milter_default_action": "tempfail"}
                yield extra, f"{args.dns_ip}:53"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_mode(
    mode: str, args: argparse.Namespace, settings: Settings, round_number: int
) -> dict[str, Row]:
    """Both servers up, fresh; for each concurrency a warm-up at it, then the timed runs,
    the server that goes first alternating between concurrencies and rounds."""
    rows: dict[str, Row] = {}
    postfix_mode: Mode = "discard" if mode == "accept" else "maildir"
    measure = accept_run if mode == "accept" else mailbox_run
    shape = settings.shape
    numbered = settings.deliveries if shape.distinct else 0
    with contextlib.ExitStack() as stack:
        extra, nameserver = stack.enter_context(edge(args)) if args.edge else ({}, "")
        postfix = stack.enter_context(
            postfix_server(args.postfix_ip, args.port, postfix_mode, extra)
        )
        sm = stack.enter_context(
            sitemail_server(
                args.sitemail_ip,
                args.port,
                max_connections=args.max_connections,
                numbered=numbered,
                nameserver=nameserver,
            )
        )
        servers: list[Server] = [postfix, sm]
        for count in args.servers:  # sitemail on PostgreSQL, a site of `count` servers
            ips = [f"127.0.0.{97 + n}" for n in range(count)]
            servers.append(
                stack.enter_context(
                    pg_sitemail(
                        ips,
                        args.port,
                        command=sitemail_command(),
                        domain=DOMAIN,
                        configure=lambda d: _configure(d, args.port, args.max_connections),
                        wait=_wait_until,
                    )
                )
            )
        for index, conc in enumerate(settings.concurrency):
            order = servers if (round_number + index) % 2 else servers[::-1]
            for server in order:
                warm_up(server, settings, conc)
                rows[f"{shape.name}/{mode}/{server.name}/{conc}"] = measure(server, settings, conc)
        for conc in settings.concurrency:
            for server in servers:
                rows[f"{shape.name}/{mode}/{server.name}/{conc}"].update(
                    latency_run(server, settings, conc, mode)
                )
    return rows


# --------------------------------------------------------------------------------------------
# report


def medians(rounds: list[dict[str, Row]]) -> dict[str, Row]:
    return {
        key: {name: statistics.median(r[key][name] for r in rounds) for name in row}
        for key, row in rounds[0].items()
    }


def ratio(rows: dict[str, Row], cell: str, conc: int) -> float:
    """sitemail's msg/s over Postfix's in one cell ("shape/mode") at one concurrency."""
    return (
        rows[f"{cell}/sitemail/{conc}"]["msgs_per_s"] / rows[f"{cell}/Postfix/{conc}"]["msgs_per_s"]
    )


def table(
    rows: dict[str, Row],
    cells: list[str],
    concurrency: list[int],
    rounds: list[dict[str, Row]] | None = None,
    *,
    edge: bool = False,
) -> list[str]:
    """The side-by-side table; with `rounds`, each round's ratio after the median's; with
    `edge`, both servers checked every message and the target is EDGE_TARGET."""
    head = (
        f"{'shape/mode':<27}{'c':>4}  {'Postfix msg/s':>13}  {'sitemail msg/s':>14}  "
        f"{'ratio':>6}  {'target':>9}  {'Postfix p50/p99 ms':>18}  {'sitemail p50/p99 ms':>19}"
    )
    if rounds:
        head += "  per round"
    lines = [head, "-" * len(head)]
    for cell in cells:
        mode = cell.rsplit("/", 1)[1]
        for conc in concurrency:
            pf, sm = rows[f"{cell}/Postfix/{conc}"], rows[f"{cell}/sitemail/{conc}"]
            got = ratio(rows, cell, conc)
            goal = ACCEPT_TARGET if mode == "accept" else MAILBOX_TARGET
            goal = EDGE_TARGET if edge else goal
            verdict = f">={goal:g} {'ok' if got >= goal else 'MISS'}"
            line = (
                f"{cell:<27}{conc:>4}  {pf['msgs_per_s']:>13.0f}  {sm['msgs_per_s']:>14.0f}  "
                f"{got:>5.2f}x  {verdict:>9}  "
                f"{pf['p50_ms']:>8.2f} / {pf['p99_ms']:>7.2f}  "
                f"{sm['p50_ms']:>9.2f} / {sm['p99_ms']:>7.2f}"
            )
            if rounds:
                line += "  " + " ".join(f"{ratio(r, cell, conc):.2f}x" for r in rounds)
            lines.append(line)
            for key in sorted(
                k for k in rows if k.startswith(f"{cell}/pg") and k.endswith(f"/{conc}")
            ):
                name = key[len(cell) + 1 :].split("/")[0]
                pg = rows[key]
                lines.append(
                    f"{'':<27}{'':>4}  sitemail on PostgreSQL, {name[2:]} server(s): "
                    f"{pg['msgs_per_s']:.0f} msg/s = {pg['msgs_per_s'] / sm['msgs_per_s']:.2f}x "
                    f"SQLite's; p50/p99 {pg['p50_ms']:.2f} / {pg['p99_ms']:.2f} ms"
                )
    return lines


def shapes_of(args: argparse.Namespace) -> list[Shape]:
    """The load shapes the command line asks for, in the order they run."""
    many = Shape(recipients=args.recipients or 1, distinct=True)
    if args.all_shapes:
        return [
            Shape(),
            Shape(reuse=False),
            many,
            Shape(reuse=False, recipients=many.recipients, distinct=True),
        ]
    if args.recipients:
        return [Shape(reuse=not args.new_connection, recipients=args.recipients, distinct=True)]
    return [Shape(reuse=not args.new_connection)]


def _postfix_version() -> str:
    proc = subprocess.run(
        ["/usr/sbin/postconf", "-d", "-h", "mail_version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return proc.stdout.strip() or "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--postfix-ip", default="127.0.0.91", help="loopback IP for Postfix")
    parser.add_argument("--sitemail-ip", default="127.0.0.92", help="loopback IP for sitemail")
    parser.add_argument("--port", type=int, default=2525, help="SMTP port of both servers")
    parser.add_argument("--messages", type=int, default=5000, help="per smtp-source run")
    parser.add_argument("--latency-messages", type=int, default=2000, help="per latency run")
    parser.add_argument("--size", type=int, default=4096, help="body bytes per message")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50])
    parser.add_argument(
        "--modes", nargs="+", choices=["accept", "mailbox"], default=["accept", "mailbox"]
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians if > 1")
    parser.add_argument(
        "--new-connection", action="store_true", help="a new connection for every message"
    )
    parser.add_argument(
        "--recipients",
        type=int,
        default=0,
        help="N recipients per message, every address of the run a different one",
    )
    parser.add_argument(
        "--all-shapes",
        action="store_true",
        help="reused and new connections x the same recipient and --recipients N distinct",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run or wait")
    parser.add_argument("--max-connections", type=int, default=200, help="sitemail [limits]")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    parser.add_argument(
        "--edge", action="store_true", help="SPF/DKIM/DMARC on: [mailauth] vs OpenDKIM+OpenDMARC"
    )
    parser.add_argument("--dns-ip", default="127.0.0.93", help="--edge: DNS server (port 53)")
    parser.add_argument(
        "--milter-ips", nargs=2, default=["127.0.0.94", "127.0.0.95"], help="--edge: milters"
    )
    parser.add_argument(
        "--servers",
        type=int,
        nargs="*",
        choices=[1, 2],
        default=[],
        help="also sitemail on a private PostgreSQL, a site of 1 and/or 2 servers (pg1, pg2)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat must be 1..10")
    if not 1 <= args.messages <= 100_000 or not 1 <= args.latency_messages <= 100_000:
        parser.error("--messages and --latency-messages must be 1..100000")
    if any(not 1 <= c <= 500 for c in args.concurrency):
        parser.error("--concurrency must be 1..500")
    if args.max_connections < max(args.concurrency) + 1:
        parser.error("--max-connections must exceed the highest --concurrency")
    if not 0 <= args.recipients <= 50 or args.messages * max(args.recipients, 1) > 100_000:
        parser.error("--recipients must be 0..50, and messages x recipients at most 100000")
    if args.servers and (args.recipients or args.all_shapes or args.edge):
        parser.error(
            "--servers runs the default shape only (no --recipients, --all-shapes, --edge)"
        )
    if args.postfix_ip == args.sitemail_ip:
        parser.error("Postfix and sitemail need distinct addresses")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(
        messages=args.messages,
        latency_messages=args.latency_messages,
        size=args.size,
        concurrency=sorted(args.concurrency),
        timeout=args.timeout,
    )
    shapes = shapes_of(args)
    cells = [f"{shape.name}/{mode}" for shape in shapes for mode in args.modes]
    ensure_postfix_installed()
    load = os.getloadavg()
    summary: dict[str, Any] = {
        "postfix": _postfix_version(),
        "cpus": os.cpu_count(),
        "loadavg_1m_at_start": round(load[0], 2),
        "messages": args.messages,
        "latency_messages": args.latency_messages,
        "size_bytes": args.size,
        "shapes": [shape.name for shape in shapes],
        "edge_checks": args.edge,
    }
    summary["event_loop"] = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    print(
        f"sitemail ({summary['event_loop']}) vs Postfix {summary['postfix']}: "
        f"{args.messages} x {args.size} B per run, "
        f"c={','.join(map(str, settings.concurrency))}, {summary['cpus']} CPUs, "
        f"load average {load[0]:.2f} at start"
        + (
            ", edge checks on (sitemail [mailauth]; Postfix + OpenDKIM + OpenDMARC)"
            if args.edge
            else ""
        ),
        flush=True,
    )
    rounds: list[dict[str, Row]] = []
    try:
        for number in range(1, args.repeat + 1):
            rows: dict[str, Row] = {}
            for shape in shapes:
                shaped = dataclasses.replace(settings, shape=shape)
                for mode in args.modes:
                    print(f"round {number}/{args.repeat}, {shape.name}, {mode}:", flush=True)
                    rows.update(run_mode(mode, args, shaped, number))
            rounds.append(rows)
            for line in table(rows, cells, settings.concurrency):
                print(f"  round {number}: {line}", flush=True)
    except (BenchError, PostfixError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result = medians(rounds)
    summary["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(f"load average {summary['loadavg_1m_at_end']:.2f} at the end (the machine may be shared)")
    print()
    if args.repeat > 1:
        print(f"median of {args.repeat} rounds:")
    for line in table(
        result, cells, settings.concurrency, rounds if args.repeat > 1 else None, edge=args.edge
    ):
        print(line)
    print(
        "accept: msg/s acknowledged durably (sitemail also delivering to its mailbox meanwhile,"
        " Postfix discarding); mailbox: msg/s from first connect to last message in a mailbox"
        " (sitemail's store vs Postfix Maildir); latency: end of DATA to the 250."
    )
    command = shlex.join(
        [".venv/bin/python", "bench/ingest.py", *(sys.argv[1:] if argv is None else argv)]
    )
    print(f"reproduce: {command}")
    summary["rounds"] = rounds
    summary["result"] = result
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
