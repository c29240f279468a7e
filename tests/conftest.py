"""Shared fixtures: a fresh data dir with an initialised site; the database the sites run on.

`--database postgresql` puts every site of the run on its own database in one private
PostgreSQL cluster (tests/support/databases.py); `--database sqlite` (the default) keeps the
embedded SQLite file. Tests that check one engine's own behaviour carry the mark
`sqlite_only` or `postgresql_only` and are skipped on the other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.databases import DATABASES, PG_HOST, new_database_url, postgres_available
from tests.support.org import free_port

from sitemail.admin.service import AdminService

# The suite runs as root with data dirs only root can reach: every `sitemail serve` it starts
# (module fixtures' too, hence here and not in a fixture) stays root, as `--allow-root`;
# tests of the switch to [server] user take it out of their servers' environment.
os.environ.setdefault("SITEMAIL_ALLOW_ROOT", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="database of the sites the tests make (postgresql: a private cluster per run)",
    )


def pytest_configure(config: pytest.Config) -> None:
    DATABASES.kind = config.getoption("--database")
    config.addinivalue_line("markers", "sqlite_only: checks SQLite's own behaviour")
    config.addinivalue_line("markers", "postgresql_only: checks PostgreSQL's own behaviour")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if DATABASES.postgresql and item.get_closest_marker("sqlite_only"):
            item.add_marker(pytest.mark.skip(reason="SQLite's own behaviour"))
        if not DATABASES.postgresql and item.get_closest_marker("postgresql_only"):
            item.add_marker(pytest.mark.skip(reason="PostgreSQL's own behaviour (--database)"))


@pytest.fixture(scope="session", autouse=True)
def _database_cluster() -> Iterator[None]:
    """The session's PostgreSQL cluster under `--database postgresql` (or once a test asks
    for `pg_url`), removed at the end."""
    if DATABASES.postgresql:
        if not postgres_available():
            pytest.exit("--database postgresql: install postgresql and psycopg (make test does)", 4)
        DATABASES.start_cluster(free_port(PG_HOST))
    try:
        yield
    finally:
        DATABASES.stop()


@pytest.fixture
def pg_url() -> str:
    """A fresh PostgreSQL database's URL, whatever `--database` says (tests of what only
    PostgreSQL does: several servers of a site); skipped where PostgreSQL is not installed."""
    if not postgres_available():
        pytest.skip("PostgreSQL (Debian's postgresql) or psycopg is not installed")
    cluster = DATABASES.start_cluster(free_port(PG_HOST))
    return cluster.url(DATABASES.new_database())


@pytest.fixture(autouse=True)
def _drop_test_databases() -> Iterator[None]:
    """Databases a test made are dropped after it (its sites are closed by then)."""
    yield
    DATABASES.drop_made()


@pytest.fixture
def site_a(tmp_path: Path) -> Iterator[AdminService]:
    """SiteA of ExchangeORG in a temporary data dir (real database: SQLite or PostgreSQL)."""
    service = AdminService.init(
        tmp_path / "SiteA",
        org="ExchangeORG",
        site="SiteA",
        server="ServerA",
        domain="sitea.example.com",
        listen=["127.0.0.1"],
        database_url=new_database_url(),
    )
    yield service
    service.close()


@pytest.fixture(autouse=True)
def _isolated_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sitemail init` remembers its data dir under XDG_CONFIG_HOME: keep tests out of $HOME."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SITEMAIL_DATA_DIR", raising=False)
