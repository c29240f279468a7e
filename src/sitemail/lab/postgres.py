"""A private PostgreSQL cluster from Debian's package, for the lab, the tests and the benches.

One job: make a throw-away cluster in a folder of its own (`initdb`), run it on one loopback
address and port (`pg_ctl start`), hand out databases on it by URL, and stop it again, by its
own pid file (`pg_ctl stop`). Nothing is shared with a system cluster: no port 5432, no socket
in /run/postgresql (`unix_socket_directories` is empty), trust authentication on the one
loopback address it listens on.

PostgreSQL refuses to run as root, so when we are root the cluster's folder belongs to the
`postgres` user Debian's package creates and the server programs run as that user (`runuser`).
`durable=False` turns `fsync` off: the tests kill sitemail, never the database, so a commit
held in the kernel's cache is as safe for them and costs no disk flush; the lab and the
benches keep PostgreSQL's defaults (a commit is flushed before it returns).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from sitemail.core.errors import ConfigError

__all__ = ["PgCluster", "postgres_bindir"]

_SUPERUSER = "sitemail"
_RUN_AS = "postgres"  # Debian's package creates this user
_START_TIMEOUT = 60  # seconds pg_ctl waits for "ready" (a loaded 2-core machine is slow)


def postgres_bindir() -> Path | None:
    """Where Debian keeps the newest installed PostgreSQL's server programs, or None."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


class PgCluster:
    """One private cluster: `start()`, `create_database(name)` -> URL, `stop()`."""

    def __init__(
        self, host: str, port: int, *, root: Path | None = None, durable: bool = True
    ) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise ConfigError("PostgreSQL's server programs are not installed (package postgresql)")
        self.bindir = bindir
        self.host = host
        self.port = port
        self.durable = durable
        self._made_root = root is None
        # A folder of its own: under the caller's (private) temp dir the postgres user could
        # not reach it, so the default is a new folder in the system's temp dir.
        self.root = Path(tempfile.mkdtemp(prefix="sitemail-pg-")) if root is None else root
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._owner = _RUN_AS if os.geteuid() == 0 else None

    # -- running programs -------------------------------------------------------------------

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self._owner is not None:
            command = ["runuser", "-u", self._owner, "--", *command]
        done = subprocess.run(  # noqa: S603 - Debian's programs, arguments of our own
            command, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()
            raise ConfigError(f"PostgreSQL {program} failed ({done.returncode}): {detail}")

    def _own(self, path: Path) -> None:
        if self._owner is not None:
            entry = pwd.getpwnam(self._owner)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """initdb (first time only), then start and wait until it accepts connections."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._own(self.root)
        if not (self.data / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", _SUPERUSER, "-A", "trust",
                "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
            )  # fmt: skip
        if not self.log.exists():
            self.log.touch()
            self._own(self.log)
        options = [
            f"-c listen_addresses={self.host}",
            f"-p {self.port}",
            "-c unix_socket_directories=''",
            "-c max_connections=200",  # several servers, each a pool, plus IMAP workers
            "-c shared_buffers=64MB",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(_START_TIMEOUT), "-o", " ".join(options), "start",
        )  # fmt: skip

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server (fast: sessions are ended) and, by default, remove its folder."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        if remove and self._made_root:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        """The postmaster's process id, from its pid file (None when it is not running)."""
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first) if first.strip().isdigit() else None

    # -- databases --------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of `database` on this cluster (psycopg 3 driver)."""
        return f"postgresql+psycopg://{_SUPERUSER}@{self.host}:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """One statement outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg  # noqa: PLC0415 - the optional extra: only who runs a cluster needs it

        dsn = f"host={self.host} port={self.port} user={_SUPERUSER} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.encode())  # names are ours: checked by _check_identifier

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """A new database (a copy of `template` when given); its URL."""
        _check_identifier(name)
        clause = ""
        if template is not None:
            _check_identifier(template)
            clause = f" TEMPLATE {template} STRATEGY FILE_COPY"  # small: a file copy is quicker
        self.admin(f"CREATE DATABASE {name}{clause}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        _check_identifier(name)
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _check_identifier(name: str) -> None:
    if not name or not all(c.isalnum() or c == "_" for c in name) or name[0].isdigit():
        raise ConfigError(f"not a plain database name: {name!r}")
