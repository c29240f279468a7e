"""bench/ingest.py's sitemail on PostgreSQL: one site of N servers on a private cluster.

One job: start a private PostgreSQL cluster (sitemail.lab.postgres, durable: fsync on, as a
production database), one site on it with the bench mailbox, and N `sitemail serve`
processes, each its own server of the site (`AdminService.join`) on its own loopback address
and the same port; count the shared queue and mailboxes; stop everything it started.
`source` splits a load between the servers (half the messages and sessions each, at once).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import create_engine, text

from _postfix import SourceResult, _port_answers
from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind
from sitemail.lab.postgres import PgCluster

PG_IP = "127.0.0.94"


class PgSitemail:
    """`servers` sitemail servers of one site on one PostgreSQL database."""

    def __init__(
        self, ips: list[str], port: int, root: Path, *, configure: Callable[[Path], None]
    ) -> None:
        self.ips = ips
        self.ip = ips[0]
        self.port = port
        self.name = f"pg{len(ips)}"
        self.root = root
        self._configure = configure
        self._procs: list[subprocess.Popen[bytes]] = []
        self.cluster = PgCluster(PG_IP, _free_port(PG_IP), root=root / "pg")
        self._engine = None

    def start(self, command: list[str], domain: str, wait: Callable[..., float]) -> None:
        self.cluster.start()
        url = self.cluster.create_database("bench")
        dirs = [self.root / f"server{n}" for n in range(len(self.ips))]
        service = AdminService.init(
            dirs[0], org="BenchORG", site="Bench", server="Bench1", domain=domain,
            listen=[self.ips[0]], database_url=url,
        )  # fmt: skip
        try:
            service.add_recipient(ObjectKind.MAILBOX, "bench", display_name="Bench")
            for n, ip in enumerate(self.ips[1:], start=2):
                service.join(dirs[n - 1], server=f"Bench{n}", listen=[ip]).close()
        finally:
            service.close()
        for data_dir, ip in zip(dirs, self.ips, strict=True):
            self._configure(data_dir)
            with (data_dir / "serve.log").open("wb") as log:
                self._procs.append(
                    subprocess.Popen(
                        [*command, "serve", "--data-dir", str(data_dir)],
                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )  # fmt: skip
            wait(
                lambda ip=ip: _port_answers(ip, self.port, expect_banner=True),
                timeout=60,
                what=f"{self.name} server on {ip}",
                poll=0.1,
            )
        self._engine = create_engine(url)

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        self._procs = []
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self.cluster.stop(remove=False)

    def _count(self, table: str) -> int:
        assert self._engine is not None
        with self._engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())

    def pending(self) -> int:
        return self._count("queue_message")

    def delivered(self) -> int:
        return self._count("mail_message")

    def clear_mailboxes(self) -> None:
        assert self._engine is not None
        with self._engine.begin() as conn:
            conn.execute(text("DELETE FROM mail_message"))


def _free_port(ip: str) -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def pg_sitemail(
    ips: list[str],
    port: int,
    *,
    command: list[str],
    domain: str,
    configure: Callable[[Path], None],
    wait: Callable[..., float],
) -> Iterator[PgSitemail]:
    root = Path(tempfile.mkdtemp(prefix=f"sitemail-bench-pg{len(ips)}-"))
    root.chmod(0o755)  # the cluster's folder inside belongs to the postgres user
    server = PgSitemail(ips, port, root, configure=configure)
    try:
        server.start(command, domain, wait)
        yield server
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)


def split_source(
    ips: list[str], run: Callable[[str, int, int], SourceResult], concurrency: int, messages: int
) -> SourceResult:
    """One smtp-source per server at once, sharing the messages and the sessions; the
    result of the whole (elapsed: from the first start to the last end)."""
    share = max(1, concurrency // len(ips))
    counts = [messages // len(ips) + (1 if n < messages % len(ips) else 0) for n in range(len(ips))]
    results: list[SourceResult] = []
    lock = threading.Lock()

    def one(ip: str, count: int) -> None:
        result = run(ip, share, count)
        with lock:
            results.append(result)

    threads = [
        threading.Thread(target=one, args=(ip, c)) for ip, c in zip(ips, counts, strict=True)
    ]
    import time  # noqa: PLC0415

    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    first = results[0]
    return SourceResult(
        messages=sum(r.messages for r in results),
        concurrency=concurrency,
        size_bytes=first.size_bytes,
        elapsed_s=elapsed,
        returncode=max(r.returncode for r in results),
        command=first.command,
        output="\n".join(r.output for r in results),
    )
