"""Shared fixtures: a fresh data dir with an initialised site."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sitemail.admin.service import AdminService


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


@pytest.fixture(autouse=True)
def _serve_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite runs as root with data dirs only root can reach: every `sitemail serve` it
    starts stays root (`--allow-root`); tests of the switch to [server] user unset this."""
    monkeypatch.setenv("SITEMAIL_ALLOW_ROOT", "1")
