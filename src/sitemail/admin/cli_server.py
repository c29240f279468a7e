"""`sitemail server add` (another server of the site) and `sitemail store migrate`.

One job: parse and print for `AdminService.join` and `migrate_store`; registered on the main app by `cli.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sitemail.admin.cli import DataDir, admin, app, handle_errors, out

__all__ = ["server_app", "store_app"]

server_app = typer.Typer(help="The servers of this site.", no_args_is_help=True)
app.add_typer(server_app, name="server")


@server_app.command("add")
@handle_errors
def server_add(
    name: Annotated[str, typer.Argument(help="The new server's name, e.g. ServerA2.")],
    new_data_dir: Annotated[
        Path, typer.Option("--new-data-dir", help="Directory to create for the new server.")
    ],
    listen: Annotated[list[str], typer.Option(help="IP address it listens on (repeatable).")],
    data_dir: DataDir = None,
) -> None:
    """Make NAME a server of this site: its own data dir and addresses, the same database."""
    with admin(data_dir) as service:
        joined = service.join(new_data_dir.resolve(), server=name, listen=listen)
        joined.close()
        site = service.org().local_site
    out.print(f"server {name} of site {site}: data dir {new_data_dir}; start it with")
    out.print(f"  sitemail serve --data-dir {new_data_dir}", markup=False)


store_app = typer.Typer(help="This server's database.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("migrate")
@handle_errors
def store_migrate(
    to: Annotated[
        str, typer.Option("--to", help="The empty database, e.g. postgresql+psycopg://u@h/db.")
    ],
    data_dir: DataDir = None,
) -> None:
    """Move this site's database (stop the server first): every row, keys kept, then point
    the configuration at the new one. The old database is left untouched."""
    with admin(data_dir) as service:
        report = service.migrate_store(to)
    out.print(f"copied {report.total} rows in {len(report.rows)} tables; database_url set")
