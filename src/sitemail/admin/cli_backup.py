"""`sitemail backup DEST` and `sitemail restore SRC`: a copy of a site while it serves.

One job: parse and render for `admin.backup`; registered on the main app by `cli.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sitemail.admin.backup import backup, restore
from sitemail.admin.cli import DataDir, app, handle_errors, out
from sitemail.admin.datadir import resolve_data_dir
from sitemail.config import load_config

__all__ = ["backup_command", "restore_command"]


@app.command("backup")
@handle_errors
def backup_command(
    destination: Annotated[Path, typer.Argument(help="A new or empty directory.")],
    data_dir: DataDir = None,
) -> None:
    """Copy this site (store, keys, certificate, config, manifest) into DEST, while the
    server runs: everything acknowledged before the backup started is in the copy."""
    config = load_config(resolve_data_dir(data_dir).resolve())
    report = backup(config, destination.resolve())
    out.print(
        f"backed up {config.data_dir} to {report.destination}: {report.files} files, "
        f"{report.size} bytes, as of {report.started}",
        markup=False,
    )


@app.command("restore")
@handle_errors
def restore_command(
    source: Annotated[Path, typer.Argument(help="A directory written by `sitemail backup`.")],
    data_dir: Annotated[
        Path,
        typer.Option("--data-dir", "-D", help="The data dir to create (new or empty)."),
    ],
) -> None:
    """Restore a backup into a new data dir, after checking every file against its manifest;
    never over a running server or a non-empty directory."""
    config = restore(source.resolve(), data_dir.resolve())
    out.print(
        f"restored {source} into {config.data_dir} (server {config.server}, site "
        f"{config.site}); check [server] listen before `sitemail serve`",
        markup=False,
    )
