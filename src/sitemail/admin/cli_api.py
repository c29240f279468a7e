"""`sitemail admin token` and `sitemail admin url`: how to reach the admin HTTP API.

One job: print the API's bearer token and address; registered on the main app by `cli.py`.
"""

from __future__ import annotations

import typer

from sitemail.admin.cli import DataDir, JsonFlag, admin, app, emit_json, handle_errors, out
from sitemail.core.errors import ConfigError

__all__ = ["admin_app"]

admin_app = typer.Typer(
    help="The admin HTTP API served by `sitemail serve`: its token and address.",
    no_args_is_help=True,
)
app.add_typer(admin_app, name="admin")


@admin_app.command("token")
@handle_errors
def admin_token(data_dir: DataDir = None) -> None:
    """Print the API token (send it as `Authorization: Bearer <token>`); made if missing."""
    with admin(data_dir) as service:
        out.print(service.admin_token(), markup=False)


@admin_app.command("url")
@handle_errors
def admin_url(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Print the admin API's base URL, where `sitemail serve` serves it ([admin] listen and
    port); its OpenAPI document is `openapi.json` there (--json: both)."""
    with admin(data_dir) as service:
        base = service.admin_url()
    if not base:
        raise ConfigError("the admin API is switched off ([admin] port = 0 in sitemail.toml)")
    if as_json:
        emit_json({"api": f"{base}/api/", "openapi": f"{base}/api/openapi.json"})
        return
    out.print(
        f"{base}/api/", markup=False
    )  # alone on its line: `curl "$(sitemail admin url)sites"`
