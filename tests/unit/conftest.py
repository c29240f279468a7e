"""Unit-test fixtures: `site_a` as a copy of one initialised data dir (init costs ~100 ms)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitemail.admin.service import AdminService


@pytest.fixture(scope="session")
def site_a_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `AdminService.init` of SiteA per session, closed (its WAL checkpointed) for copying."""
    path = tmp_path_factory.mktemp("template") / "SiteA"
    AdminService.init(
        path,
        org="ExchangeORG",
        site="SiteA",
        server="ServerA",
        domain="sitea.example.com",
        listen=["127.0.0.1"],
    ).close()
    return path


@pytest.fixture
def site_a(site_a_template: Path, tmp_path: Path) -> Iterator[AdminService]:
    """SiteA of ExchangeORG in a temporary data dir (SQLite, real database), as tests/conftest.py
    defines it, but copied from one initialised data dir instead of initialised each time."""
    service = AdminService.open(Path(shutil.copytree(site_a_template, tmp_path / "SiteA")))
    yield service
    service.close()
