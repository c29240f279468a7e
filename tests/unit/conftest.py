"""Unit-test fixtures: `site_a` as a copy of one initialised data dir (init costs ~100 ms).

On PostgreSQL the template's database is kept too and each copy gets its own database made
from it (`CREATE DATABASE ... TEMPLATE`), its URL written into the copied configuration.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.databases import DATABASES

from sitemail.admin.service import AdminService


@pytest.fixture(scope="session")
def site_a_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One `AdminService.init` of SiteA per session, closed (its WAL checkpointed) for copying;
    with the name of its database on PostgreSQL ("" on SQLite)."""
    path = tmp_path_factory.mktemp("template") / "SiteA"
    database = ""
    if DATABASES.postgresql:
        database = DATABASES.new_database(keep=True)
    assert DATABASES.cluster is not None or not database
    AdminService.init(
        path,
        org="ExchangeORG",
        site="SiteA",
        server="ServerA",
        domain="sitea.example.com",
        listen=["127.0.0.1"],
        database_url=DATABASES.cluster.url(database) if DATABASES.cluster and database else "",
    ).close()
    return path, database


@pytest.fixture
def site_a(site_a_template: tuple[Path, str], tmp_path: Path) -> Iterator[AdminService]:
    """SiteA of ExchangeORG in a temporary data dir (real database), as tests/conftest.py
    defines it, but copied from one initialised data dir instead of initialised each time."""
    template, database = site_a_template
    data_dir = Path(shutil.copytree(template, tmp_path / "SiteA"))
    if database and DATABASES.cluster is not None:
        copy = DATABASES.new_database(template=database)
        config = data_dir / "sitemail.toml"
        text = config.read_text(encoding="utf-8")
        config.write_text(
            text.replace(DATABASES.cluster.url(database), DATABASES.cluster.url(copy)),
            encoding="utf-8",
        )
    service = AdminService.open(data_dir)
    yield service
    service.close()
