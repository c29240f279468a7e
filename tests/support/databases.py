"""Which database the tests' sites run on: SQLite files (the default) or PostgreSQL.

`pytest --database postgresql` runs the same tests with every site on a database of its own in
one private PostgreSQL cluster (sitemail.lab.postgres), started once per session on a loopback
address of this module's block (127.35.0.x) and removed at the end. Harness code asks
`new_database_url()` for the `database_url` of each site it makes: "" on SQLite (the file in
the data dir, as `sitemail init` does), a fresh database's URL on PostgreSQL. Databases made
during a test are dropped after it (`drop_test_databases`), so a long run holds a few at most.
"""

from __future__ import annotations

import importlib.util
import itertools
import shutil
import threading
from pathlib import Path

from sitemail.lab.postgres import PgCluster, postgres_bindir

PG_HOST = "127.35.0.1"


class Databases:
    """The session's choice, and the cluster when it is PostgreSQL."""

    def __init__(self) -> None:
        self.kind = "sqlite"
        self.cluster: PgCluster | None = None
        self._names = itertools.count(1)
        self._made: list[str] = []
        self._lock = threading.Lock()

    @property
    def postgresql(self) -> bool:
        return self.kind == "postgresql"

    def start_cluster(self, port: int) -> PgCluster:
        """The session's private cluster (started on first use)."""
        if self.cluster is None:
            cluster = PgCluster(PG_HOST, port, durable=False)
            cluster.start()
            self.cluster = cluster
        return self.cluster

    def new_database(self, *, template: str | None = None, keep: bool = False) -> str:
        """A new database on the cluster; its name (dropped after the test unless `keep`)."""
        assert self.cluster is not None, "no PostgreSQL cluster in this session"
        with self._lock:
            name = f"t{next(self._names)}"
            if not keep:
                self._made.append(name)
        self.cluster.create_database(name, template=template)
        return name

    def drop_made(self) -> None:
        with self._lock:
            made, self._made = self._made, []
        if self.cluster is not None:
            for name in made:
                self.cluster.drop_database(name)

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


DATABASES = Databases()


def postgres_available() -> bool:
    """Debian's server programs and the psycopg driver are both there."""
    return importlib.util.find_spec("psycopg") is not None and postgres_bindir() is not None


def new_database_url() -> str:
    """`database_url` for a new site: "" on SQLite, a fresh database on PostgreSQL."""
    if not DATABASES.postgresql:
        return ""
    assert DATABASES.cluster is not None
    return DATABASES.cluster.url(DATABASES.new_database())


def store_url(tmp_path: Path) -> str:
    """A concrete URL for a bare store: a SQLite file under `tmp_path`, or a fresh database."""
    return new_database_url() or f"sqlite:///{tmp_path / 'db.sqlite'}"


def template_url(tmp_path: Path) -> str:
    """A URL for a store to copy from (`copy_url`): kept for the whole session on PostgreSQL."""
    if not DATABASES.postgresql:
        return f"sqlite:///{tmp_path / 'template.db'}"
    assert DATABASES.cluster is not None
    return DATABASES.cluster.url(DATABASES.new_database(keep=True))


def copy_url(template: str, target: Path) -> str:
    """A new store holding what `template` holds (closed): a file copy, or a database made
    from it as template. `target` names the SQLite file."""
    if not DATABASES.postgresql:
        shutil.copy(template.removeprefix("sqlite:///"), target)
        return f"sqlite:///{target}"
    assert DATABASES.cluster is not None
    return DATABASES.cluster.url(DATABASES.new_database(template=template.rsplit("/", 1)[1]))
