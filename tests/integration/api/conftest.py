"""The admin API under test: SiteA (and SiteB, whose key a connector pins) in temporary data
dirs, the app in FastAPI's TestClient, and the token in a ready-made header."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sitemail.admin.service import AdminService
from sitemail.web import create_app

ADDRESS = "127.10.75.10"  # in the config only: TestClient opens no socket


@dataclass
class Api:
    client: TestClient
    service: AdminService  # the same data dir, for setting up and checking
    token: str
    peer: AdminService  # SiteB: a real key to pin in connectors
    wakes: list[int]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_site(root: Path, site: str, address: str) -> AdminService:
    return AdminService.init(
        root / site,
        org="ExchangeORG",
        site=site,
        server=f"Server{site[-1]}",
        domain=f"{site.lower()}.example.com",
        listen=[address],
    )


@contextmanager
def running_api(root: Path) -> Iterator[Api]:
    service = make_site(root, "SiteA", ADDRESS)
    peer = make_site(root, "SiteB", "127.10.75.11")
    # Refusal tests send dozens of wrong tokens from one client: no throttling here (that is
    # tests/integration/attacks/test_admin_attacks.py's subject).
    config = root / "SiteA" / "sitemail.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("[auth]\n", "[auth]\nfailure_delay = 0.01\nmax_failures = 100000\n", 1)
    )
    wakes: list[int] = []
    app = create_app(root / "SiteA", wake=lambda: wakes.append(1))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Api(client, service, service.admin_token(), peer, wakes)
    finally:
        service.close()
        peer.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """A fresh SiteA for a test that changes things."""
    with running_api(tmp_path) as value:
        yield value


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One SiteA for a module's tests that leave it as it was (refusals, bad input)."""
    with running_api(tmp_path_factory.mktemp("api")) as value:
        yield value
