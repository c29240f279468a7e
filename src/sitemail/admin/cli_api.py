"""`sitemail admin token` and `sitemail admin url`: how to reach the admin HTTP API and the
web console.

One job: print the bearer token and the addresses; registered on the main app by `cli.py`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sitemail.admin.cli import DataDir, JsonFlag, admin, app, emit_json, handle_errors, out
from sitemail.core.errors import ConfigError

__all__ = ["admin_app"]

admin_app = typer.Typer(
    help="The admin HTTP API and web console served by `sitemail serve`: token and address.",
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
def admin_url(
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
    api_only: Annotated[
        bool, typer.Option("--api", help="Only the API's base URL, alone on its line.")
    ] = False,
    console_only: Annotated[
        bool, typer.Option("--console", help="Only the web console's URL, alone on its line.")
    ] = False,
) -> None:
    """Print where `sitemail serve` serves the admin API and the web console ([admin] listen
    and port); the API's OpenAPI document is `openapi.json` under the API (--json: all three)."""
    with admin(data_dir) as service:
        base = service.admin_url()
    if not base:
        raise ConfigError("the admin API is switched off ([admin] port = 0 in sitemail.toml)")
    api, console = f"{base}/api/", f"{base}/console/"
    if as_json:
        emit_json({"api": api, "openapi": f"{api}openapi.json", "console": console})
    elif api_only or console_only:
        # alone on its line: `curl "$(sitemail admin url --api)sites"`
        out.print(api if api_only else console, markup=False)
    else:
        out.print(
            f"{api:<40} the admin API (Authorization: Bearer <sitemail admin token>)",
            markup=False,
            soft_wrap=True,
        )
        out.print(
            f"{console:<40} the web console (log in with the same token)",
            markup=False,
            soft_wrap=True,
        )
