"""Benchmark: memory of the server under big messages, sitemail beside Postfix (issue 16).

16 clients each send one 20 MB message at the same time; a sampler reads the resident set
size (RSS, from /proc) of every process of the server ten times a second, and prints the
peak of their sum while the messages are being accepted (until the last 250) and while
they are being delivered (until the last is in a mailbox or at the sink), with the peak
of the summed PSS beside it (shared pages divided among the processes that share them:
Postfix runs one process per session, each counting its shared libraries whole in RSS).

Both servers run privately on loopback in the same run, one after the other, on the same
load: Debian's Postfix (a throw-away instance, bench/_postfix.py; every process under its
master counts) and `sitemail serve` (a fresh data dir; the process and any children count).
Postfix here is the MTA alone, with no IMAP or POP3 server beside it; so sitemail runs as
the MTA alone too, its IMAP and POP3 listeners switched off (port 0), which leaves out the
two worker processes that serve them (about 45 MB each when idle, not touched by SMTP).
`--client-access` keeps them on, to see the whole server.
Three scenarios, each with fresh instances:

* queue: into the queue only: the next hop (a loopback port where nothing listens) refuses
  connections, so every message stays queued (sitemail: a domain route; Postfix: relayhost);
* mailbox: to a local mailbox (sitemail's mailbox store; Postfix's virtual(8) Maildir);
* relay: to a remote domain relayed to Postfix's smtp-sink on loopback (sitemail: a domain
  route; Postfix: relayhost), which discards what it receives.

The target of issue 16: under 200 MB for sitemail, and within 2x of Postfix. The table says
which rows meet it. Bounded: 16 messages per scenario, every wait has a timeout, servers and
sink stopped (their files removed) on the way out. Loopback only. Run as root (Postfix),
from the repository root:

    .venv/bin/python bench/bigmessages.py
    .venv/bin/python bench/bigmessages.py --messages 16 --size-mb 20 --scenarios queue,mailbox
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from _postfix import (
    PrivatePostfix,
    _port_answers,
    ensure_postfix_installed,
    find_smtp_source,
    measure_latency_async,
)
from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind

SITEMAIL_IP = "127.23.1.1"
POSTFIX_IP = "127.23.1.2"
SINK_IP = "127.23.1.3"
PORT = 2525
SINK_PORT = 2526
NOWHERE_PORT = 2527  # nothing listens there: the "queue" scenario's next hop
DOMAIN = "bench.test"
REMOTE = "sink.test"
SENDER = "loadgen@sender.test"
TARGET_MB = 200.0
TARGET_RATIO = 2.0


class BenchError(RuntimeError):
    """A server or the sink did not start, or did not finish in time."""


def wait_until(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Signal a process we started, and kill it if it has not exited within `timeout`."""
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


# -- memory ------------------------------------------------------------------------------------


def _kib(pid: int, path: str, field: str) -> int:
    try:
        text = Path(f"/proc/{pid}/{path}").read_text(encoding="ascii", errors="replace")
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def descendants(root: int) -> set[int]:
    """`root` and every process under it (by parent pid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
                ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


class Sampler:
    """Peak summed RSS and PSS (MB) of the processes `pids()` names, per phase."""

    def __init__(self, pids: Callable[[], set[int]]) -> None:
        self._pids = pids
        self.phase = "idle"
        self.peaks: dict[str, tuple[float, float, int]] = {}  # phase -> (rss, pss, processes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = self._pids()
            rss = sum(_kib(p, "status", "VmRSS:") for p in pids) / 1024
            pss = sum(_kib(p, "smaps_rollup", "Pss:") for p in pids) / 1024
            old = self.peaks.get(self.phase, (0.0, 0.0, 0))
            self.peaks[self.phase] = (max(old[0], rss), max(old[1], pss), max(old[2], len(pids)))
            self._stop.wait(0.1)


# -- the sink ------------------------------------------------------------------------------------


@contextlib.contextmanager
def smtp_sink() -> Iterator[None]:
    """Postfix's smtp-sink on SINK_IP:SINK_PORT, discarding everything; stopped by pid."""
    source = find_smtp_source()
    binary = shutil.which("smtp-sink") or (str(source.parent / "smtp-sink") if source else "")
    if not binary or not Path(binary).exists():
        raise BenchError("smtp-sink is not installed (Debian's postfix package)")
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [binary, *user, f"{SINK_IP}:{SINK_PORT}", "64"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _port_answers(SINK_IP, SINK_PORT), 10, "smtp-sink")
        yield
    finally:
        stop(process, signal.SIGTERM, 5)


# -- the servers --------------------------------------------------------------------------------


@dataclass
class Run:
    """One server in one scenario: where to send, and how to tell the work is done."""

    name: str
    ip: str
    pids: Callable[[], set[int]]
    done: Callable[[int], bool]  # all `count` messages delivered (mailbox or sink)


def sitemail_command() -> list[str]:
    script = Path(sys.executable).parent / "sitemail"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sitemail.main"]


@contextlib.contextmanager
def sitemail(scenario: str, message_size: int, *, client_access: bool) -> Iterator[Run]:
    root = Path(tempfile.mkdtemp(prefix="sitemail-bigmessages-"))
    data_dir = root / "data"
    service = AdminService.init(
        data_dir, org="BenchORG", site="Bench", server="Bench1", domain=DOMAIN, listen=[SITEMAIL_IP]
    )
    try:
        service.add_recipient(ObjectKind.MAILBOX, "bench", display_name="Bench")
        if scenario != "mailbox":
            port = SINK_PORT if scenario == "relay" else NOWHERE_PORT
            service.add_domain_route(REMOTE, f"{SINK_IP}:{port}")
    finally:
        service.close()
    config = data_dir / "sitemail.toml"
    text = config.read_text(encoding="utf-8")
    text = text.replace(
        "\n[smtp]\n", f"\n[smtp]\nport = {PORT}\ntrusted_networks = ['127.0.0.0/8']\n", 1
    )
    text = text.replace("\n[limits]\n", f"\n[limits]\nmessage_size = {message_size}\n", 1)
    if not client_access:  # as the Postfix it is compared to: the MTA alone (module docstring)
        for table in ("imap", "pop3"):
            text = text.replace(f"\n[{table}]\n", f"\n[{table}]\nport = 0\ntls_port = 0\n", 1)
    config.write_text(text, encoding="utf-8")
    log = root / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*sitemail_command(), "serve", "--allow-root", "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    db: sqlite3.Connection | None = None
    try:
        wait_until(lambda: _port_answers(SITEMAIL_IP, PORT, expect_banner=True), 60, "sitemail")
        db = sqlite3.connect(data_dir / "sitemail.db", timeout=30)

        def count(sql: str) -> int:
            assert db is not None
            return int(db.execute(sql).fetchall()[0][0])

        def done(n: int) -> bool:
            if process.poll() is not None:
                raise BenchError(f"sitemail exited:\n{log.read_text(errors='replace')[-3000:]}")
            if scenario == "mailbox":
                return count("SELECT count(*) FROM mail_message") >= n
            if scenario == "queue":
                return count("SELECT count(*) FROM queue_message") >= n
            return count("SELECT count(*) FROM track_event WHERE event = 'relayed'") >= n

        yield Run("sitemail", SITEMAIL_IP, lambda: descendants(process.pid), done)
    finally:
        if db is not None:
            db.close()
        stop(process, signal.SIGTERM, 30)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def postfix(scenario: str, message_size: int) -> Iterator[Run]:
    extra = {"message_size_limit": str(message_size), "virtual_mailbox_limit": "0"}
    if scenario != "mailbox":
        port = SINK_PORT if scenario == "relay" else NOWHERE_PORT
        extra |= {
            "default_transport": "smtp",
            "relay_transport": "smtp",
            "relayhost": f"[{SINK_IP}]:{port}",
        }
    mode = "maildir" if scenario == "mailbox" else "discard"
    with PrivatePostfix(
        ip=POSTFIX_IP, port=PORT, mode=mode, domain=DOMAIN, extra_main_cf=extra
    ) as pf:

        def done(n: int) -> bool:
            if scenario == "mailbox":
                return pf.delivered_count() >= n
            if scenario == "queue":
                return pf.queue_size() >= n
            return pf.queue_size() == 0

        yield Run("Postfix", POSTFIX_IP, pf._instance_pids, done)


# -- one measurement ----------------------------------------------------------------------------


def measure(run: Run, scenario: str, messages: int, size: int, timeout: float) -> dict[str, float]:
    recipient = f"bench@{DOMAIN}" if scenario == "mailbox" else f"someone@{REMOTE}"
    with Sampler(run.pids) as sampler:
        time.sleep(0.5)
        sampler.phase = "accept"
        start = time.perf_counter()
        result = asyncio.run(
            measure_latency_async(
                run.ip,
                PORT,
                messages=messages,
                concurrency=messages,
                size_bytes=size,
                recipient=recipient,
                sender=SENDER,
                op_timeout=timeout,
                total_timeout=timeout,
            )
        )
        accepted = time.perf_counter() - start
        if result.messages != messages:
            raise BenchError(f"{run.name}: {result.messages} of {messages} accepted")
        sampler.phase = "deliver"
        wait_until(lambda: run.done(messages), timeout, f"{run.name}'s deliveries")
        delivered = time.perf_counter() - start
        time.sleep(0.3)
    rss_a, pss_a, procs_a = sampler.peaks.get("accept", (0.0, 0.0, 0))
    rss_d, pss_d, procs_d = sampler.peaks.get("deliver", (0.0, 0.0, 0))
    idle = sampler.peaks.get("idle", (0.0, 0.0, 0))[0]
    print(
        f"  {scenario:<7} {run.name:<8} idle {idle:6.1f} MB | accepting: peak RSS "
        f"{rss_a:6.1f} MB (PSS {pss_a:6.1f}, {procs_a} processes), {accepted:5.1f} s | "
        f"delivering: peak RSS {rss_d:6.1f} MB (PSS {pss_d:6.1f}, {procs_d} processes), "
        f"all done after {delivered:5.1f} s",
        flush=True,
    )
    return {"rss": max(rss_a, rss_d), "pss": max(pss_a, pss_d), "accept": rss_a, "deliver": rss_d}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=16, help="concurrent messages")
    parser.add_argument("--size-mb", type=float, default=20.0, help="size of each message")
    parser.add_argument(
        "--scenarios", default="queue,mailbox,relay", help="comma-separated: queue, mailbox, relay"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per wait")
    parser.add_argument(
        "--client-access",
        action="store_true",
        help="keep sitemail's IMAP and POP3 workers on (the whole server, not the MTA alone)",
    )
    args = parser.parse_args()
    if not 1 <= args.messages <= 64 or not 0 < args.size_mb <= 100:
        parser.error("1..64 messages of at most 100 MB")
    ensure_postfix_installed()
    size = int(args.size_mb * 1024 * 1024)
    message_size = size + 1024 * 1024
    command = shlex.join([".venv/bin/python", "bench/bigmessages.py", *sys.argv[1:]])
    print(f"{args.messages} concurrent messages of {args.size_mb:g} MB; reproduce with: {command}")
    what = "with" if args.client_access else "without (as Postfix, the MTA alone)"
    print(f"sitemail runs {what} its IMAP and POP3 workers")
    rows: list[tuple[str, dict[str, float], dict[str, float]]] = []
    with smtp_sink():
        for scenario in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
            if scenario not in ("queue", "mailbox", "relay"):
                parser.error(f"unknown scenario {scenario!r}")
            with sitemail(scenario, message_size, client_access=args.client_access) as run:
                ours = measure(run, scenario, args.messages, size, args.timeout)
            with postfix(scenario, message_size) as run:
                theirs = measure(run, scenario, args.messages, size, args.timeout)
            rows.append((scenario, ours, theirs))
    print("\npeak summed RSS of the server's processes (PSS in brackets):")
    print(
        f"  {'scenario':<9}{'sitemail':>18}{'Postfix':>18}{'ratio':>8}  target <{TARGET_MB:g} MB, <={TARGET_RATIO:g}x"
    )
    for scenario, ours, theirs in rows:
        ratio = ours["rss"] / theirs["rss"] if theirs["rss"] else float("inf")
        met = ours["rss"] < TARGET_MB and ratio <= TARGET_RATIO
        print(
            f"  {scenario:<9}{ours['rss']:>9.1f} ({ours['pss']:5.1f}){theirs['rss']:>10.1f} "
            f"({theirs['pss']:5.1f}){ratio:>7.2f}x  {'met' if met else 'NOT met'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
