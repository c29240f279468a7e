"""Every /api/ route needs the token: none, a wrong one, or another scheme get 401 with a JSON
error, before any work is done; `sitemail admin token` prints it and makes it when missing."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from tests.integration.api.conftest import Api, make_site
from typer.testing import CliRunner

from sitemail.admin.cli import app as cli_app
from sitemail.admin.token import TOKEN_FILE, check_token, read_token
from sitemail.web import routes


def api_routes() -> list[tuple[str, str]]:
    """(method, path with every parameter filled) of each route under /api/."""
    found = [("GET", "/api/openapi.json")]
    for router in routes.ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            path = "/api" + re.sub(r"\{[^}]+\}", "SiteB", route.path)
            found += [(method, path) for method in sorted(route.methods)]
    return found


ROUTES = api_routes()
WRONG = {
    "no token": {},
    "wrong token": {"Authorization": "Bearer not-the-token"},
    "empty token": {"Authorization": "Bearer "},
    "basic scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
}


def test_api_routes_are_all_listed() -> None:
    """The parametrised checks below cover the whole API (about thirty routes)."""
    assert len(ROUTES) > 30
    assert ("POST", "/api/replication/SiteB/request-now") in ROUTES


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("headers", WRONG.values(), ids=WRONG.keys())
def test_api_route_without_the_token_is_401(
    shared_api: Api, method: str, path: str, headers: dict[str, str]
) -> None:
    """No token, a wrong one, an empty one, or Basic: 401, a JSON error, nothing changed."""
    api = shared_api
    before = api.service.list_recipients(None)
    response = api.client.request(method, path, headers=headers, json={})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthorized"
    assert "sitemail admin token" in response.json()["error"]
    assert api.service.list_recipients(None) == before


def test_api_openapi_document_with_the_token(shared_api: Api) -> None:
    """/api/openapi.json is served with the token and declares bearer authentication."""
    doc = shared_api.client.get("/api/openapi.json", headers=shared_api.auth).json()
    assert doc["openapi"].startswith("3.")
    assert "/api/sites" in doc["paths"]
    assert any(s.get("scheme") == "bearer" for s in doc["components"]["securitySchemes"].values())


def test_token_made_at_init_with_mode_0600(shared_api: Api) -> None:
    """`sitemail init` writes the token, readable by its owner only."""
    api = shared_api
    path = api.service.config.data_dir / TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_token(api.service.config.data_dir) == api.token
    assert check_token(api.token, api.token)
    assert not check_token(api.token, api.token[:-1] + "x")


def test_admin_token_command_prints_it_and_makes_one_for_an_old_data_dir(tmp_path: Path) -> None:
    """`sitemail admin token` prints the token; a data dir older than the API gets one."""
    service = make_site(tmp_path, "SiteA", "127.10.75.12")
    service.close()
    data_dir = tmp_path / "SiteA"
    (data_dir / TOKEN_FILE).unlink()  # as before the admin API existed
    runner = CliRunner()
    first = runner.invoke(cli_app, ["admin", "token", "-D", str(data_dir)])
    assert first.exit_code == 0, first.output
    token = first.stdout.strip()
    assert len(token) >= 40
    assert stat.S_IMODE((data_dir / TOKEN_FILE).stat().st_mode) == 0o600
    again = runner.invoke(cli_app, ["admin", "token", "-D", str(data_dir)])
    assert again.stdout.strip() == token


def test_admin_url_command(tmp_path: Path) -> None:
    """`sitemail admin url`: the first listen address and port 8025, or [admin] settings;
    port 0 (switched off) is a clear error."""
    service = make_site(tmp_path, "SiteA", "127.10.75.12")
    service.close()
    data_dir = tmp_path / "SiteA"
    runner = CliRunner()
    shown = runner.invoke(cli_app, ["admin", "url", "-D", str(data_dir)])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("http://127.10.75.12:8025/api/")
    assert [line.split()[0] for line in shown.stdout.splitlines()] == [
        "http://127.10.75.12:8025/api/",
        "http://127.10.75.12:8025/console/",
    ]
    alone = runner.invoke(cli_app, ["admin", "url", "--api", "-D", str(data_dir)])
    assert alone.stdout == "http://127.10.75.12:8025/api/\n"
    console = runner.invoke(cli_app, ["admin", "url", "--console", "-D", str(data_dir)])
    assert console.stdout == "http://127.10.75.12:8025/console/\n"
    both = json.loads(
        runner.invoke(cli_app, ["admin", "url", "--json", "-D", str(data_dir)]).stdout
    )
    assert both["console"] == "http://127.10.75.12:8025/console/"
    config = data_dir / "sitemail.toml"
    text = config.read_text()
    config.write_text(text.replace("[admin]\n", '[admin]\nlisten = "127.10.75.13"\nport = 9\n'))
    assert (
        "http://127.10.75.13:9/api/"
        in runner.invoke(cli_app, ["admin", "url", "-D", str(data_dir)]).output
    )
    config.write_text(text.replace("[admin]\n", "[admin]\nport = 0\n"))
    off = runner.invoke(cli_app, ["admin", "url", "-D", str(data_dir)])
    assert off.exit_code == 78
    assert "switched off" in off.output
