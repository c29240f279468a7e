"""`sitemail use DIR` and `sitemail where`: choose, and show, the site later commands act on.

One job: set and show the per-user default data dir (admin/datadir.py) with the site it
holds; registered on the main app by `cli.py`. Every other command prints the same context
line itself (admin/context.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sitemail.admin.cli import DataDir, JsonFlag, app, emit_json, err, handle_errors, out
from sitemail.admin.context import SiteContext, context_line
from sitemail.admin.datadir import choose_data_dir, pointer_file, remember_data_dir
from sitemail.config import load_config
from sitemail.core.errors import ConfigError

__all__ = ["use", "where"]


@app.command("use")
@handle_errors
def use(
    data_dir: Annotated[Path, typer.Argument(help="The data dir later commands act on.")],
) -> None:
    """Make DATA_DIR the default of every later command without --data-dir."""
    config = load_config(data_dir.resolve())  # a data dir, or a clear error (exit 78)
    if not remember_data_dir(config.data_dir):
        raise ConfigError(f"cannot write {pointer_file()}: the default stays as it was")
    context = SiteContext.of(config)
    out.print(f"commands without --data-dir now act on {context.describe()}", markup=False)


@app.command("where")
@handle_errors
def where(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Show the site, server and data dir a command would act on, and what chose it."""
    choice = choose_data_dir(data_dir)
    context = SiteContext.of(load_config(choice.path))
    if as_json:
        emit_json(
            {
                "site": context.site,
                "server": context.server,
                "data_dir": context.data_dir,
                "chosen_by": choice.source,
            }
        )
        return
    out.print(f"{context_line(context)}, chosen by {choice.source}", markup=False)
    if choice.source == "sitemail use":
        err.print(f"(recorded in {pointer_file()})", markup=False)
