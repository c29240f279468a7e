"""Shared fixtures: a fresh data dir with an initialised site."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitemail.admin.service import AdminService

# The suite runs as root with data dirs only root can reach: every `sitemail serve` it starts
# (module fixtures' too, hence here and not in a fixture) stays root, as `--allow-root`;
# tests of the switch to [server] user take it out of their servers' environment.
os.environ.setdefault("SITEMAIL_ALLOW_ROOT", "1")


@pytest.fixture
def site_a(tmp_path: Path) -> Iterator[AdminService]:
    """SiteA of ExchangeORG in a temporary data dir (SQLite, real database)."""
    service = AdminService.init(
        tmp_path / "SiteA",
        org="ExchangeORG",
        site="SiteA",
        server="ServerA",
        domain="sitea.example.com",
        listen=["127.0.0.1"],
    )
    yield service
    service.close()


@pytest.fixture(autouse=True)
def _isolated_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sitemail init` remembers its data dir under XDG_CONFIG_HOME: keep tests out of $HOME."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SITEMAIL_DATA_DIR", raising=False)
